"""Direct settlement: a merchant's own gateway credentials (credentials) and the adapters built from
them for its orders (book)."""
