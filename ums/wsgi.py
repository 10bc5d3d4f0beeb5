"""WSGI entry point for gunicorn."""

import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ums.settings")
application = get_wsgi_application()
# Import the URL configuration (and every view module it names) while the worker boots:
# Django does it on the first request otherwise, which then took 0.7-0.9 s per worker.
get_resolver().url_patterns  # noqa: B018 (the property imports them)
