"""Reconciler of team chat: every enabled realm whose desired generation was not applied
gets a sync job (a lost signal, a worker that died), and every realm is re-synced after
``UMS_CHAT_RESYNC_INTERVAL`` seconds so changes made on the Zulip server by hand are
undone (level-triggered: the tree is the truth)."""

from __future__ import annotations

import datetime
from typing import Any

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from ums import reconcile
from ums.models import Job

from .actions import SYNC_JOB, enqueue_sync
from .models import ChatRealm


@reconcile.register("chat.realms")
def resync_realms() -> dict[str, Any] | None:
    stale = timezone.now() - datetime.timedelta(seconds=settings.UMS_CHAT_RESYNC_INTERVAL)
    ChatRealm.objects.filter(is_enabled=True).filter(
        Q(last_sync_at__lt=stale) | Q(last_sync_at__isnull=True, applied_generation__gt=0)
    ).filter(applied_generation=F("desired_generation")).update(
        desired_generation=F("desired_generation") + 1
    )
    behind = list(
        ChatRealm.objects.filter(is_enabled=True, applied_generation__lt=F("desired_generation"))
    )
    if not behind:
        return None
    busy = set(
        Job.objects.filter(
            kind=SYNC_JOB,
            status__in=[Job.PENDING, Job.RUNNING],
            object_id__in=[str(r.pk) for r in behind],
        ).values_list("object_id", flat=True)
    )
    queued = [r.pk for r in behind if str(r.pk) not in busy and enqueue_sync(r) is not None]
    return {"queued": queued} if queued else None
