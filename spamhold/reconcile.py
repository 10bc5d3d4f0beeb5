"""Held mail's reconciler: re-drive every release/delete/expire request a dead process left.

Registered as ``spamhold.outcomes`` (beat runs it every ``UMS_RECONCILE_INTERVAL`` s).
A pending request (:class:`~spamhold.models.OutcomeIntent`) is due when its job's lease ran
out (the worker died: no heartbeat for ``UMS_SPAMHOLD_INTENT_LEASE`` s), its first job was
never picked up, or its retry after a node failure is due. Each due request is taken with
a conditional UPDATE (two reconcilers never re-drive it twice) and gets a new job; after
``UMS_SPAMHOLD_INTENT_MAX_ATTEMPTS`` attempts it is given up with the reason (messages
back on hold showing it, the request failed, an audit record, an error in the log).

Also expires idempotency keys older than a day. With nothing pending a pass is two
indexed statements that find nothing.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext as _

from ums import reconcile

from . import actions, intents
from .models import IdempotencyKey


@reconcile.register("spamhold.outcomes")
def outcomes() -> dict[str, Any]:
    redriven: list[int] = []
    gave_up: list[int] = []
    for intent in intents.due():
        if intent.attempts >= intents.max_attempts():
            reason = intent.error or _(
                "No worker completed this request in %(attempts)d attempts."
            ) % {"attempts": intent.attempts}
            if actions.give_up(actor=None, intent=intent, error=reason):
                gave_up.append(intent.pk)
            continue
        if not intents.claim_redrive(intent):
            continue
        why = "retry due" if intent.state == "retrying" else "worker lost (lease expired)"
        intents.redrive(intent, reason=why)
        redriven.append(intent.pk)
    cutoff = timezone.now() - datetime.timedelta(hours=IdempotencyKey.KEEP_HOURS)
    purged, _detail = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return {"redriven": redriven, "gaveUp": gave_up, "keysPurged": purged}
