"""Staging datasets of given-up rebuilds from a Maildir archive, as copies of a domain's
mail for permanent deletion (:mod:`.holders`).

A rebuild from an archive (:mod:`.rebuild_archive`) unpacks the whole domain into
``<pool>/ums-rebuild-<domain>`` on the new node and renames it into place at the end. A
rebuild job that failed and was given up leaves that dataset behind, full of the
domain's mail as archived; purge must find it and destroy it. It is looked for on the
nodes rebuild jobs of the domain chose as the new node, and on the domain's own node.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from deploy.connector.base import Connector
from mail.models import Domain
from servers.models import Node
from ums.models import Job

from .holders import HeldCopy
from .offnode_actions import REBUILD_JOB
from .purge_holders import dataset_of, node_of
from .rebuild_archive import STAGE_RE, destroy_staging


def _session(node: Node) -> AbstractContextManager[Connector]:
    from deploy.nodes import session

    return session(node)


def nodes_of(domain: Domain) -> list[Node]:
    """The nodes a staging dataset of ``domain`` can be on (none without a mail store
    pool: no rebuild from an archive can have run)."""
    if dataset_of(domain) is None:
        return []
    ids: set[int] = set()
    if domain.pk:
        jobs = Job.objects.filter(kind=REBUILD_JOB, params__domain_ids__contains=[domain.pk])
        ids = {int(p["new_node_id"]) for p in jobs.values_list("params", flat=True)}
    own = node_of(domain)
    if own is not None:
        ids.add(own.pk)
    return list(Node.objects.filter(pk__in=ids).order_by("hostname"))


class RebuildStagingHolder:
    name = "rebuild_staging"

    def __init__(self, connect: Callable[[Node], AbstractContextManager[Connector]] = _session):
        self.connect = connect

    def find(self, domain: Domain, local_part: str | None) -> list[HeldCopy]:
        copies = []
        suffix = f"/ums-rebuild-{domain.name}"
        for node in nodes_of(domain):
            with self.connect(node) as conn:
                result = conn.run(["zfs", "list", "-H", "-o", "name", "-t", "filesystem"])
            for name in result.stdout.split() if result.ok else []:
                if name.endswith(suffix) and STAGE_RE.match(name):
                    copies.append(
                        HeldCopy(
                            holder=self.name,
                            description=f"staging dataset {name} of a given-up rebuild "
                            f"on {node.hostname}",
                            also_removes=[f"all mailboxes of {domain.name} in it"]
                            if local_part
                            else [],
                            ref={"node": node.pk, "dataset": name},
                        )
                    )
        return copies

    def destroy(
        self, copy: HeldCopy, domain: Domain, local_part: str | None, log: Callable[[str], Any]
    ) -> None:
        node = Node.objects.get(pk=copy.ref["node"])
        with self.connect(node) as conn:
            destroy_staging(conn, copy.ref["dataset"])
        log(f"destroyed {copy.ref['dataset']} on {node.hostname}")
