"""A mail change (a mailbox added, disabled, deleted, its chat flag changed) makes the
realms serving that customer out of date; they sync once the change commits."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.dispatch import receiver

from mail.signals import mail_changed

from .actions import enqueue_sync
from .models import ChatRealm


def _ancestors(path: str) -> list[str]:
    ids = [part for part in path.split("/") if part]
    return ["/" + "/".join(ids[: i + 1]) + "/" for i in range(len(ids))]


@receiver(mail_changed)
def on_mail_changed(sender: Any, customer_path: str = "", **kwargs: Any) -> None:
    ancestors = _ancestors(customer_path)
    # Every mail change runs this update; written once as SQL, not compiled each time.
    with connection.cursor() as cursor:
        cursor.execute(_BUMP_SQL, [ancestors])
        if not cursor.rowcount:
            return
    realms = ChatRealm.objects.filter(customer_path__in=ancestors, is_enabled=True)
    for realm in realms:
        enqueue_sync(realm)


_BUMP_SQL = (
    f"UPDATE {ChatRealm._meta.db_table} SET desired_generation = desired_generation + 1 "  # noqa: S608
    "WHERE customer_path = ANY(%s) AND is_enabled"
)
