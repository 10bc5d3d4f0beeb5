"""Imported by the fault tests' Celery worker (``UMS_CELERY_IMPORTS``) at start.

The worker is a separate process, so the converge fixtures' in-process choices must be
made here too: the same services as tests/converge (Courier, the delivery agent,
Postfix; the content filter has its own tests), and the test job kinds.
"""

from __future__ import annotations

from deploy.services import registry
from deploy.services.courier import SERVICE as COURIER
from deploy.services.lda import SERVICE as LDA
from deploy.services.postfix import SERVICE as POSTFIX
from tests.jobs import handlers  # noqa: F401  (registers the test job kinds)

registry.SERVICES = [COURIER, LDA, POSTFIX]
