"""Imported by the ACME fault test's Celery worker (``UMS_CELERY_IMPORTS``) at start: the
same private nginx layout and certificate store as the test process."""

from __future__ import annotations

import os

from django.conf import settings

from deploy.services import registry
from deploy.services.nginx import NginxService

RUNTIME = "/var/lib/ums-test-nginx"

registry.SERVICES = [NginxService(runtime_dir=RUNTIME, acme_root=f"{RUNTIME}/acme")]
if os.environ.get("UMS_TEST_TLS_CERT_DIR"):
    settings.UMS_TLS_CERT_DIR = os.environ["UMS_TEST_TLS_CERT_DIR"]
