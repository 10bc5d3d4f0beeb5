"""Periodic housekeeping of tenant data (Celery beat)."""

from celery import shared_task

from . import throttle


@shared_task(name="tenants.purge_login_failures")
def purge_login_failures() -> int:
    return throttle.purge_expired()
