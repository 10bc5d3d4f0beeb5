"""The mail app's JSON API (routes in urls.py, mounted under /api/v1/mail/)."""
