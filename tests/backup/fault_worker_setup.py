"""Imported by the store-settings fault test's Celery worker (``UMS_CELERY_IMPORTS``):
the worker is another process, so it needs the same services as the test (the ZFS mail
store in front of the mail services of tests/converge)."""

from __future__ import annotations

from deploy.services import registry
from deploy.services.courier import SERVICE as COURIER
from deploy.services.lda import SERVICE as LDA
from deploy.services.postfix import SERVICE as POSTFIX
from deploy.services.zfs import SERVICE as ZFS

registry.SERVICES = [ZFS, COURIER, LDA, POSTFIX]
