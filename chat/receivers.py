"""A mail change (a mailbox added, disabled, deleted, its chat flag changed) makes the
realms serving that customer out of date; they sync once the change commits."""

from __future__ import annotations

from typing import Any

from django.db.models import F
from django.dispatch import receiver

from mail.signals import mail_changed

from .actions import enqueue_sync
from .models import ChatRealm


def _ancestors(path: str) -> list[str]:
    ids = [part for part in path.split("/") if part]
    return ["/" + "/".join(ids[: i + 1]) + "/" for i in range(len(ids))]


@receiver(mail_changed)
def on_mail_changed(sender: Any, customer_path: str = "", **kwargs: Any) -> None:
    realms = ChatRealm.objects.filter(customer_path__in=_ancestors(customer_path), is_enabled=True)
    if not realms.update(desired_generation=F("desired_generation") + 1):
        return
    for realm in realms:
        enqueue_sync(realm)
