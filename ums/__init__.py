"""The UMS project package: settings, wiring and the shared machinery apps build on."""

from .celery import app as celery_app

__all__ = ["celery_app"]
