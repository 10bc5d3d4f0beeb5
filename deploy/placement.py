"""Domain → IMAP node placement: which node holds a domain's Maildirs.

A domain is placed once, when it is created (the ``mail_changed`` receiver) or at the
latest when a node of its customer tree is next converged (``deploy.desired.build``),
and stays there: its mail lives on that node, so moving it is a data migration, not
something a converge may decide.

The rule, deterministic for the same database:

1. candidates are the serving IMAP nodes of the domain's customer tree, i.e. those owned
   by the domain's customer or one of its ancestors;
2. the nearest owner wins: a customer running its own IMAP nodes keeps its mail on them
   (data sovereignty), a customer without any uses its parent's, and so on up;
3. among those, the node holding the fewest domains, then the lowest id.

Domains placed in one call are taken in name order, each counting towards the next, so
a batch spreads evenly. Two processes placing the same domain at once both insert with
``ignore_conflicts`` and then read back the row that won.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import connection
from django.db.models import Count

from mail.models import Domain
from servers.models import Node
from ums import auditing
from ums.actions import action

from .models import DomainPlacement

__all__ = ["Holder", "ancestor_paths", "holders", "place_domains"]


@dataclass(frozen=True)
class Holder:
    """The IMAP node a domain is placed on, as other nodes need to know it."""

    node_id: int
    hostname: str
    address: str  # where mail for the domain is relayed (deploy.desired.mail_address)


def ancestor_paths(path: str) -> list[str]:
    """``/1/4/9/`` → ``["/1/", "/1/4/", "/1/4/9/"]`` (outermost first)."""
    ids = [part for part in path.split("/") if part]
    return ["/" + "/".join(ids[: i + 1]) + "/" for i in range(len(ids))]


def _holder(node_id: int, hostname: str, addresses: list[str] | None, ssh: str) -> Holder:
    return Holder(node_id, hostname, (addresses or [ssh])[0])


def holders(domain_ids: Iterable[int]) -> dict[int, Holder]:
    """Current placements of ``domain_ids`` (one query); unplaced domains are absent."""
    ids = list(domain_ids)
    if not ids:
        return {}
    rows = DomainPlacement.objects.filter(domain_id__in=ids).values_list(
        "domain_id", "node_id", "node__hostname", "node__addresses", "node__ssh_address"
    )
    return {domain_id: _holder(*rest) for domain_id, *rest in rows}


def _placed_and_todo(ids: list[int]) -> tuple[dict[int, Holder], list[tuple[int, str, str]]]:
    """The placements of ``ids`` and the unplaced ones ``(pk, name, customer_path)`` by
    name, in one statement: every mail change's consumer asks this (issue 19), so it is
    written once as SQL instead of two querysets compiled each time."""
    if not ids:
        return {}, []
    addresses = Node._meta.get_field("addresses")
    placed: dict[int, Holder] = {}
    todo: list[tuple[int, str, str]] = []
    with connection.cursor() as cursor:
        cursor.execute(_PLACED_SQL, [ids])
        for pk, name, path, node_id, hostname, node_addresses, ssh in cursor.fetchall():
            if node_id is None:
                todo.append((pk, name, path))
            else:
                node_addresses = addresses.from_db_value(node_addresses, None, connection)
                placed[pk] = _holder(node_id, hostname, node_addresses, ssh)
    return placed, todo


# Table names from the models, values as parameters.
_PLACED_SQL = (
    "SELECT d.id, d.name, d.customer_path, p.node_id, n.hostname, n.addresses, n.ssh_address "  # noqa: S608
    f"FROM {Domain._meta.db_table} d "
    f"LEFT JOIN {DomainPlacement._meta.db_table} p ON p.domain_id = d.id "
    f"LEFT JOIN {Node._meta.db_table} n ON n.id = p.node_id "
    "WHERE d.id = ANY(%s) ORDER BY d.name"
)


def place_domains(domain_ids: Iterable[int], *, actor: object = None) -> dict[int, Holder]:
    """Place every unplaced domain of ``domain_ids``; return all their placements.

    A constant number of queries whatever the number of domains (plus one audit row per
    new placement). A domain with no serving IMAP node in its tree stays unplaced and is
    placed by a later call, once such a node is approved. Only reads until there is
    something to place: the writes are an action of their own (its own savepoint), so the
    common case, every domain already placed (each mail change asks), costs one statement.
    """
    ids = sorted({int(i) for i in domain_ids})
    placed, todo = _placed_and_todo(ids)
    if not todo:
        return placed
    candidates = _candidates(todo)
    if not candidates:
        return placed
    return _place(ids, todo, candidates, actor=actor)


def _candidates(todo: list[tuple[int, str, str]]) -> list[tuple]:
    """Serving IMAP nodes of the unplaced domains' customer trees, by id."""
    from .desired import SERVING_STATUSES

    paths = {p for _pk, _name, path in todo for p in ancestor_paths(path)}
    return [
        row
        for row in Node.objects.filter(status__in=SERVING_STATUSES, customer_path__in=paths)
        .order_by("pk")
        .values_list("pk", "hostname", "addresses", "ssh_address", "customer_path", "roles")
        if "imap" in (row[5] or ())
    ]


@action
def _place(
    ids: list[int], todo: list[tuple[int, str, str]], candidates: list[tuple], *, actor: object
) -> dict[int, Holder]:
    load = Counter(
        dict(
            DomainPlacement.objects.filter(node_id__in=[c[0] for c in candidates])
            .values("node_id")
            .annotate(n=Count("domain_id"))
            .values_list("node_id", "n")
        )
    )
    new: list[tuple[int, str, str, tuple]] = []
    for pk, name, customer_path in todo:
        # Nearest owner first: walk from the domain's own customer up to the root.
        for path in reversed(ancestor_paths(customer_path)):
            level = [c for c in candidates if c[4] == path]
            if level:
                node = min(level, key=lambda c: (load[c[0]], c[0]))
                load[node[0]] += 1
                new.append((pk, name, customer_path, node))
                break
    DomainPlacement.objects.bulk_create(
        [DomainPlacement(domain_id=pk, node_id=node[0]) for pk, _n, _p, node in new],
        ignore_conflicts=True,
    )
    placed = holders(ids)
    for pk, name, customer_path, node in new:
        winner = placed.get(pk)
        if winner is None or winner.node_id != node[0]:
            continue  # placed concurrently by someone else, who audited it
        auditing.record(
            "domain.placed",
            object_type="mail.domain",
            object_id=pk,
            object_repr=name,
            customer_path=customer_path,
            after={"node": node[1], "node_id": node[0]},
        )
    return placed
