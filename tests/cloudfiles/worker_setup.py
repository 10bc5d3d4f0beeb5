"""Imported by the cloud files fault test's Celery worker (``UMS_CELERY_IMPORTS``).

The worker is a separate process: it converges only the Nextcloud service, as the test
process does (tests/cloudfiles/conftest.py).
"""

from __future__ import annotations

from deploy.services import registry
from deploy.services.nextcloud import SERVICE as NEXTCLOUD

registry.SERVICES = [NEXTCLOUD]
