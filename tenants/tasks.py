"""Periodic housekeeping of tenant data (Celery beat)."""

from celery import shared_task

from . import throttle


@shared_task(name="tenants.purge_login_failures")
def purge_login_failures() -> int:
    return throttle.purge_expired()


@shared_task(name="tenants.purge_identity_records")
def purge_identity_records() -> dict[str, int]:
    """Forget ended sessions past the absolute timeout and expired SAML assertion ids."""
    from . import session_records
    from .sso import saml

    return {
        "sessions": session_records.purge_expired(),
        "saml_assertions": saml.purge_used_assertions(),
    }
