"""Job handler of team chat: sync one realm with its Zulip server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from django.db import connection
from django.utils.translation import gettext_noop

from ums import jobs
from ums.models import Job

from .actions import SYNC_JOB
from .models import ChatRealm
from .sync import sync_realm
from .zulip import ZulipError


@contextlib.contextmanager
def _realm_lock(realm_id: int) -> Iterator[None]:
    """One sync per realm at a time (a retried job and the reconciler's may overlap): a
    session advisory lock, so the second waits and then reads what the first applied."""
    key = f"chat-realm:{realm_id}"
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(hashtext(%s))", [key])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", [key])


@jobs.handler(SYNC_JOB)
def run_sync(job: Job, reporter: jobs.Reporter) -> dict[str, Any]:
    """Safe to run again: every step reads the server first (see chat.sync)."""
    realm = ChatRealm.objects.filter(pk=job.params.get("realm_id")).first()
    if realm is None:
        raise jobs.PermanentJobError("the chat organisation was deleted")
    if not realm.is_enabled:
        reporter.say(gettext_noop("the organisation is disabled: nothing to do"))
        return {"skipped": True}
    with _realm_lock(realm.pk):
        realm.refresh_from_db()  # what the previous holder of the lock left
        generation = realm.desired_generation
        reporter.say(gettext_noop("syncing %(name)s at %(url)s"), name=realm.name, url=realm.url)
        try:
            result = sync_realm(realm, progress=reporter.progress)
        except ZulipError as exc:
            ChatRealm.objects.filter(pk=realm.pk).update(last_error=str(exc)[:2000])
            raise
    ChatRealm.objects.filter(pk=realm.pk, applied_generation__lt=generation).update(
        applied_generation=generation
    )
    reporter.say(
        gettext_noop(
            "%(users)s user(s); created %(created)s, reactivated %(reactivated)s, "
            "deactivated %(deactivated)s; streams: %(streams)s"
        ),
        users=result["users"],
        created=len(result["created"]),
        reactivated=len(result["reactivated"]),
        deactivated=len(result["deactivated"]),
        streams=", ".join(result["streams"]) or "-",
    )
    if result.get("over_limit"):
        reporter.say(
            gettext_noop("not created, over the chat users limit: %(emails)s"),
            emails=", ".join(result["over_limit"]),
        )
    return result
