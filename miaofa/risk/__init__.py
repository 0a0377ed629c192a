"""Order admission: the rules and their file (rules), the chain that runs them (chain), the open-order
caps counted in PostgreSQL (admission), and the small in-memory limiters (limiters)."""
