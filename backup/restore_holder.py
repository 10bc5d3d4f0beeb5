"""Restore clones as copies of a domain's mail, for permanent deletion (:mod:`.holders`).

A restore reads its snapshot through a clone (``<pool>/ums-restore-<job id>``,
:mod:`.restore_run`) that exists while the job runs and, if a job is given up, until
someone destroys it. It holds the whole domain's mail as of the snapshot, and while it
exists its snapshot cannot be destroyed, so purge must find and destroy it first.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from deploy.connector.base import Connector
from mail.models import Domain
from servers.models import Node

from .holders import HeldCopy
from .models import Snapshot
from .restore_run import CLONE_RE, destroy_clone_named


def _session(node: Node) -> AbstractContextManager[Connector]:
    from deploy.nodes import session

    return session(node)


class RestoreCloneHolder:
    name = "restore_clones"

    def __init__(self, connect: Callable[[Node], AbstractContextManager[Connector]] = _session):
        self.connect = connect

    def _nodes(self, domain: Domain) -> dict[int, tuple[Node, set[str]]]:
        """Nodes with snapshots of the domain, and the domain's datasets there."""
        found: dict[int, tuple[Node, set[str]]] = {}
        for snap in Snapshot.objects.filter(domain=domain).select_related("node"):
            found.setdefault(snap.node_id, (snap.node, set()))[1].add(snap.dataset)
        return found

    def find(self, domain: Domain, local_part: str | None) -> list[HeldCopy]:
        copies = []
        for node, datasets in self._nodes(domain).values():
            with self.connect(node) as conn:
                result = conn.run(["zfs", "list", "-H", "-o", "name,origin", "-t", "filesystem"])
            for line in result.stdout.splitlines() if result.ok else []:
                name, _tab, origin = line.partition("\t")
                if CLONE_RE.match(name) and origin.split("@", 1)[0] in datasets:
                    copies.append(
                        HeldCopy(
                            holder=self.name,
                            description=f"restore clone {name} of {origin} on {node.hostname}",
                            also_removes=[f"all mailboxes of {domain.name} in it"]
                            if local_part
                            else [],
                            ref={"node": node.pk, "clone": name},
                        )
                    )
        return copies

    def destroy(
        self, copy: HeldCopy, domain: Domain, local_part: str | None, log: Callable[[str], Any]
    ) -> None:
        node = Node.objects.get(pk=copy.ref["node"])
        with self.connect(node) as conn:
            destroy_clone_named(conn, copy.ref["clone"])
        log(f"destroyed {copy.ref['clone']}")
