"""The copy holder of storage tiering (see :mod:`backup.holders`): the tier copies of a
mailbox or domain, for ``purge_mailbox``/``purge_domain --permanent``.

Tier copies outlive their links on purpose (an older snapshot's link may still need one,
see :mod:`backup.tiering`), so a permanent purge must find them on the tier itself, not
through the Maildir: the node program lists the mailbox's folder (a folder tier) or its
key prefix (an S3 tier) and deletes what it finds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mail.models import Domain
from servers.models import Node

from .holders import HeldCopy


class TierHolder:
    name = "tier"

    def _run(self, node: Node, domain: Domain, local_part: str | None, op: str) -> Any:
        from deploy.desired import os_family
        from deploy.nodes import session
        from deploy.services.probes import PYTHON

        from . import tiering
        from .models import MailStoreSettings

        row = MailStoreSettings.objects.select_related("tier_target").filter(node=node).first()
        if row is None or not row.tier_kind:
            return None
        with session(node) as conn:
            spec = tiering.mount_spec(row, tiering.mail_owner(conn, tiering.mail_root()))
            args = {"op": op, "mount": spec, "domain": domain.name, "local": local_part}
            python = PYTHON.get(os_family(node.os_id), PYTHON["debian"])
            return tiering.node_program(conn, python, args)

    def find(self, domain: Domain, local_part: str | None) -> list[HeldCopy]:
        from .purge_holders import node_of

        node = node_of(domain)
        if node is None:
            return []
        answer = self._run(node, domain, local_part, "held")
        if not answer or not answer.get("copies"):
            return []
        return [
            HeldCopy(
                holder=self.name,
                description=(
                    f"{answer['copies']} tiered message copies ({answer['bytes']} bytes) "
                    f"on the tier of {node.hostname}"
                ),
                ref={"node_id": node.pk},
            )
        ]

    def destroy(
        self, copy: HeldCopy, domain: Domain, local_part: str | None, log: Callable[[str], None]
    ) -> None:
        node = Node.objects.get(pk=copy.ref["node_id"])
        answer = self._run(node, domain, local_part, "remove") or {}
        log(f"destroyed {answer.get('removed', 0)} tiered message copies on {node.hostname}")


holder = TierHolder()
