"""The spam-hold JSON API (routes in urls.py, mounted under /api/v1/spamhold/)."""
