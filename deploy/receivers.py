"""Turns what other apps announce into node work."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.dispatch import receiver

from mail.signals import mail_changed
from servers.models import Node
from servers.signals import node_approved

from . import dirty
from .actions import schedule_verification


@receiver(node_approved)
def verify_approved_node(sender: Any, node_id: int, **kwargs: Any) -> None:
    """Approval: verify the node, then run a full converge (packages included).

    The converge follows unless ``UMS_CONVERGE_ON_APPROVAL`` is off (tests/servers turn it
    off: their nodes share the host's package paths, so installing Postfix there would
    touch the test machine itself).
    """
    with transaction.atomic():
        schedule_verification(node_id)
    if settings.UMS_CONVERGE_ON_APPROVAL and dirty.enabled():
        node = Node.objects.get(pk=node_id)
        with transaction.atomic():
            dirty.enqueue(node, reason="approved")
        # The new node may be a relay target or upstream of its neighbours.
        others = [pk for pk in dirty.nodes_serving(node.customer_path) if pk != node_id]
        if others:
            dirty.mark(others, reason=f"node {node.hostname} approved")


@receiver(mail_changed)
def converge_after_mail_change(sender: Any, customer_path: str, **kwargs: Any) -> None:
    dirty.on_mail_changed(sender, customer_path=customer_path, **kwargs)
