"""Beat task of cloud files: measure used space on the cloud files nodes."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from deploy.tasks import _exclusive

from . import collect


@shared_task(name="cloudfiles.collect_used_space", acks_late=True)
def collect_used_space() -> Any:
    return _exclusive("cloudfiles-collect", settings.UMS_USAGE_COLLECT_INTERVAL * 5, collect.sweep)
