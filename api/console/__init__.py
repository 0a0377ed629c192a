"""The merchant console (/console): server-rendered pages for a shop's owner and staff."""
