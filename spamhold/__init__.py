"""Held messages: ingestion from SMTP nodes, query, view, release, delete and expiry."""
