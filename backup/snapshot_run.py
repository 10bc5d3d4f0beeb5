"""One snapshot pass over a node: take what is due, prune beyond retention, record what
the node then reports.

Used by the ``backup.snapshot_node`` job with an SSH session, and by tests with a local
connector on a real zfs-fuse pool. Safe to run again at any point: due snapshots are
named by period, pruning only destroys what retention excludes, and the recorded rows are
replaced by what the node lists afterwards (observed state).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from deploy.connector.base import Connector
from deploy.services.zfs import ZfsService
from mail.models import Domain
from servers.models import Node

from . import exclude_layout, exclusion_policy, snapshots, store_settings
from . import policy as policy_mod
from .models import Snapshot


def layout(conf: Mapping[str, Any]) -> str:
    """The parent dataset of the domain datasets (``<pool>/mail`` by default)."""
    return ZfsService._layout(conf)[1]


def dataset_of(parent: str, domain: Domain) -> str:
    return ZfsService.dataset_for(parent, domain.name)


def run_node(
    conn: Connector,
    node: Node,
    domains: Iterable[Domain],
    *,
    conf: Mapping[str, Any],
    manual: bool = False,
    now: datetime.datetime | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Take, prune and record for ``domains`` on ``node``; a summary of what was done."""
    now = now or timezone.now()
    parent = layout(conf)
    domains = list(domains)
    existing = snapshots.read(conn, parent)
    taken: list[str] = []
    pruned: list[str] = []
    policies: dict[int, dict[str, Any]] = {}
    # Excluded domains get no snapshot and no pruning (what exists is kept); the store's
    # own snapshot fields override the customers' policy for every domain on it.
    excluded = exclusion_policy.for_domains(domains)
    store = store_settings.policy_overrides([node.pk]).get(node.pk, {})

    copied = copy_bases(node)
    stores = exclude_layout.store_datasets(conn, parent)
    problems: list[str] = []
    for domain in domains:
        dataset = dataset_of(parent, domain)
        if excluded[domain.pk].domain_excluded:
            log(f"skipped {dataset}: excluded from backups")
            continue
        if not _layout_in_step(conn, node, domain, dataset, excluded[domain.pk], stores, conf, log):
            problems.append(domain.name)
        have = {s.name for s in existing.get(dataset, [])}
        if manual:
            wanted = [_free_manual_name(have, now)]
            drop: list[str] = []
        else:
            if domain.customer_id not in policies:
                policies[domain.customer_id] = {**policy_mod.values(domain.customer), **store}
            policy = policies[domain.customer_id]
            wanted = snapshots.due(have, policy, now)
            drop = snapshots.to_prune(have | set(wanted), policy, now)
            drop = [n for n in drop if n not in copied.get(domain.name, ())]
        for name in wanted:
            if snapshots.take(conn, dataset, name):
                taken.append(f"{dataset}@{name}")
                log(f"took {dataset}@{name}")
        for name in drop:
            snapshots.destroy(conn, dataset, name)
            pruned.append(f"{dataset}@{name}")
            log(f"pruned {dataset}@{name}")
    observed = snapshots.read(conn, parent)
    record(node, domains, parent, observed)
    if problems:
        # The snapshots are taken all the same (a backup that holds too much beats none);
        # the job fails so the layout is retried and an administrator sees why.
        raise exclude_layout.ExcludeError(
            "excluded folders could not be moved out of the snapshots of: " + ", ".join(problems)
        )
    return {"taken": taken, "pruned": pruned}


def _layout_in_step(
    conn: Connector,
    node: Node,
    domain: Domain,
    dataset: str,
    excl: Any,
    stores: set[str],
    conf: Mapping[str, Any],
    log: Callable[[str], None],
) -> bool:
    """Excluded folders and mailboxes moved out of the dataset before it is snapshotted
    (:mod:`backup.exclude_layout`); False (logged) when that failed."""
    from deploy.desired import os_family
    from deploy.services.probes import PYTHON

    try:
        exclude_layout.converge_domain(
            conn,
            dataset=dataset,
            domain=domain.name,
            excl=excl,
            has_store=f"{dataset}/{exclude_layout.STORE}" in stores,
            conf=conf,
            python=PYTHON.get(os_family(node.os_id), PYTHON["debian"]),
            log=log,
        )
    except exclude_layout.ExcludeError as exc:
        log(str(exc))
        return False
    return True


def _free_manual_name(have: set[str], now: datetime.datetime) -> str:
    """The on-demand name for ``now``, one second later while that name is taken: a
    second "Snapshot now" within the same second must still take a snapshot (mail may
    have arrived since the first), and names carry whole seconds."""
    at = now
    while (name := snapshots.period_name("manual", at)) in have:
        at += datetime.timedelta(seconds=1)
    return name


def copy_bases(node: Node) -> dict[str, set[str]]:
    """Per domain, the snapshots off-node copies continue from (never pruned here, or
    the next copy would have to be a full one)."""
    from .models_offnode import OffnodeCopy

    bases: dict[str, set[str]] = {}
    for name, snap in OffnodeCopy.objects.filter(source_node=node).values_list(
        "domain_name", "last_snapshot"
    ):
        bases.setdefault(name, set()).add(snap)
    return bases


def record(
    node: Node,
    domains: Iterable[Domain],
    parent: str,
    observed: Mapping[str, list[snapshots.SnapshotInfo]],
) -> None:
    """Make the Snapshot rows of these domains on ``node`` what the node reported."""
    now = timezone.now()
    with transaction.atomic():
        for domain in domains:
            dataset = dataset_of(parent, domain)
            reported = observed.get(dataset, [])
            Snapshot.objects.filter(node=node, dataset=dataset).exclude(
                name__in=[s.name for s in reported]
            ).delete()
            for snap in reported:
                Snapshot.objects.update_or_create(
                    node=node,
                    dataset=dataset,
                    name=snap.name,
                    defaults={
                        "domain": domain,
                        "customer_path": domain.customer_path,
                        "tier": snap.tier,
                        "taken_at": snap.created,
                        "used_bytes": snap.used,
                        "referenced_bytes": snap.referenced,
                        "observed_at": now,
                    },
                )


def snapshot_path(snapshot: Snapshot, local_part: str | None = None) -> str:
    """Where the snapshot's files are on the node: the domain's folder under ZFS's
    ``.zfs/snapshot`` directory, or one mailbox's Maildir in it."""
    from deploy.desired import DEFAULT_SETTINGS

    conf = {**DEFAULT_SETTINGS, **getattr(settings, "UMS_CONVERGE", {})}
    root = str(conf.get("mail_root") or "/var/mail/vhosts").rstrip("/")
    domain = snapshot.dataset.rsplit("/", 1)[-1]
    path = f"{root}/{domain}/.zfs/snapshot/{snapshot.name}/"
    return f"{path}{local_part}/Maildir/" if local_part else path
