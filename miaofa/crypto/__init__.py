"""Keys at rest and in flight: the vault (card keys, keyed hashes, tokens) and Temporal's payload codec."""
