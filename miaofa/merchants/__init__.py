"""Merchants: the shops on the platform, their owners' and staff's tokens, what each one owns."""
