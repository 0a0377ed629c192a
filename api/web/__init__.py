"""The buyer's pages: templates, static files and the strings of both languages (routes in api/routes/web.py)."""
