"""Turns what other apps announce into node work."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.dispatch import receiver

from servers.signals import node_approved

from .actions import schedule_verification


@receiver(node_approved)
def verify_approved_node(sender: Any, node_id: int, **kwargs: Any) -> None:
    with transaction.atomic():
        schedule_verification(node_id)
