"""The ``backup.offnode_copy`` pass over one IMAP node, and the records it leaves.

Opens the SSH sessions (the IMAP node, the backup node) and the target driver, runs
:mod:`backup.offnode` per domain, and records each copy as :class:`OffnodeCopy` (observed
state). One domain failing does not stop the others; the pass then fails as a whole so
the job is retried, and a retry sends only what is still missing.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext_noop

from servers.models import Node

from . import drivers, exclusions, offnode, offnode_archive, snapshot_run
from . import policy as policy_mod
from .models_offnode import OffnodeCopy, OffnodeSetting


def placed_domains(node: Node) -> list[Any]:
    from deploy.models import DomainPlacement

    placements = DomainPlacement.objects.filter(node=node).select_related("domain__customer")
    return [p.domain for p in placements.order_by("domain__name")]


def record(domain: Any, source: Node, *, kind: str, location: str, **where: Any) -> None:
    """The copy's row after a successful step (``where``: backup_node= or target=)."""
    snaps = where.pop("snapshots")
    sent_bytes = where.pop("bytes_sent", 0)
    left_out = where.pop("left_out", {})
    members = where.pop("members", {})
    kinds = where.pop("archive_kinds", {})
    guids = where.pop("guids", {})
    if not snaps:
        return
    OffnodeCopy.objects.update_or_create(
        domain_name=domain.name,
        kind=kind,
        backup_node=where.get("backup_node"),
        target=where.get("target"),
        defaults={
            "domain": domain,
            "customer_path": domain.customer_path,
            "source_node": source,
            "location": location,
            "snapshots": snaps,
            "last_snapshot": snaps[-1],
            "bytes_sent": sent_bytes,
            "left_out": left_out,
            "members": members,
            "archive_kinds": kinds,
            "guids": guids,
            "copied_at": timezone.now(),
        },
    )


def run_setting(
    setting: OffnodeSetting, say: Callable[..., None], *, key: int = 0
) -> dict[str, Any]:
    """Copy every copyable domain of the setting's node to its destinations (``key``: the
    job's id, naming the snapshot clone a Maildir archive reads through)."""
    from deploy.nodes import session

    conf = getattr(settings, "UMS_CONVERGE", {})
    parent = snapshot_run.layout(conf)
    node = setting.node
    domains = placed_domains(node)
    allowed = offnode.copyable(domains)
    for skipped in sorted({d.name for d in domains} - {d.name for d in allowed}):
        say(gettext_noop("%(domain)s is excluded from backups: not copied"), domain=skipped)
    summary: dict[str, Any] = {"node": [], "target": [], "errors": []}
    if not allowed:
        return summary
    with ExitStack() as stack:
        source = stack.enter_context(session(node))
        dest = stack.enter_context(session(setting.backup_node)) if setting.backup_node else None
        driver = drivers.driver_for(setting.target) if setting.target else None
        if driver is not None:
            stack.callback(driver.close)
        archives = driver is not None and setting.target_format == OffnodeSetting.MAILDIR
        if archives:
            for clone in offnode_archive.leftover_clones(source, parent.split("/", 1)[0]):
                offnode_archive.destroy_clone(source, clone)
        for domain in allowed:
            dataset = snapshot_run.dataset_of(parent, domain)
            if dest is not None:
                _to_node(setting, source, dest, dataset, domain, say, summary)
            if archives:
                _archive(setting, source, driver, dataset, domain, say, summary, key)
            elif driver is not None:
                _to_target(setting, source, driver, dataset, domain, say, summary)
    return summary


def _to_node(setting, source, dest, dataset, domain, say, summary) -> None:
    copy = offnode.copy_dataset_name(setting.backup_dataset, domain.name)
    try:
        result = offnode.copy_to_node(
            source, dest, dataset, copy, policy_mod.values(domain.customer)
        )
    except Exception as exc:
        say(
            gettext_noop("copy of %(domain)s to %(node)s failed: %(error)s"),
            domain=domain.name,
            node=dest.host,
            error=str(exc),
        )
        summary["errors"].append(f"{domain.name} -> {setting.backup_node}: {exc}")
        return
    if result["sent"]:
        say(
            gettext_noop("sent %(domain)s up to %(snapshot)s to %(node)s (%(bytes)s bytes)"),
            domain=domain.name,
            snapshot=result["sent"]["snapshot"],
            node=setting.backup_node.hostname,
            bytes=result["bytes"],
        )
    for name in result.get("pruned", []):
        say(gettext_noop("pruned %(copy)s@%(snapshot)s"), copy=copy, snapshot=name)
    record(
        domain,
        setting.node,
        kind=OffnodeCopy.NODE,
        location=copy,
        backup_node=setting.backup_node,
        snapshots=result["snapshots"],
        guids=result.get("guids", {}),
        bytes_sent=result["bytes"],
    )
    summary["node"].append({"domain": domain.name, **result})


def _to_target(setting, source, driver, dataset, domain, say, summary) -> None:
    try:
        result = offnode.copy_to_target(
            source,
            driver,
            dataset,
            domain.name,
            full_every=setting.target_full_every,
            keep_chains=setting.target_keep_chains,
        )
    except Exception as exc:
        say(
            gettext_noop("copy of %(domain)s to target %(target)s failed: %(error)s"),
            domain=domain.name,
            target=setting.target.name,
            error=str(exc),
        )
        summary["errors"].append(f"{domain.name} -> {setting.target}: {exc}")
        return
    if result["leftovers"]:
        say(
            gettext_noop("deleted %(count)s objects an interrupted copy left behind"),
            count=len(result["leftovers"]),
        )
    if result["sent"]:
        say(
            gettext_noop("stored %(domain)s up to %(snapshot)s on %(target)s (%(bytes)s bytes)"),
            domain=domain.name,
            snapshot=result["sent"]["snapshot"],
            target=setting.target.name,
            bytes=result["bytes"],
        )
    manifest = result.get("manifest") or {"chains": []}
    snaps = [o["snapshot"] for chain in manifest["chains"] for o in chain["objects"]]
    record(
        domain,
        setting.node,
        kind=OffnodeCopy.TARGET,
        location=offnode.manifest_name(domain.name),
        target=setting.target,
        snapshots=snaps,
        bytes_sent=result["bytes"],
    )
    summary["target"].append({"domain": domain.name, "sent": result["sent"]})


def _archive(setting, source, driver, dataset, domain, say, summary, key) -> None:
    from deploy.services.postfix import safe

    from .restore_run import conf

    mail_root = str(conf().get("mail_root") or "/var/mail/vhosts").rstrip("/")
    excl = exclusions.for_domain(domain)
    try:
        result = offnode_archive.archive_to_target(
            source,
            driver,
            live=f"{mail_root}/{safe.domain(domain.name)}",
            dataset=dataset,
            domain_name=domain.name,
            excl=excl,
            keep=setting.target_keep_chains,
            full_every=setting.archive_full_every,
            key=key,
        )
    except Exception as exc:
        say(
            gettext_noop("archive of %(domain)s to target %(target)s failed: %(error)s"),
            domain=domain.name,
            target=setting.target.name,
            error=str(exc),
        )
        summary["errors"].append(f"{domain.name} -> {setting.target} (archive): {exc}")
        return
    if result["leftovers"]:
        say(
            gettext_noop("deleted %(count)s objects an interrupted copy left behind"),
            count=len(result["leftovers"]),
        )
    if result["sent"]:
        left = offnode_archive.left_out(excl)
        full = gettext_noop(
            "archived %(domain)s at %(snapshot)s on %(target)s (%(bytes)s bytes; "
            "left out: mailboxes %(mailboxes)s, folders %(folders)s)"
        )
        increment = gettext_noop(
            "archived %(domain)s at %(snapshot)s on %(target)s as an increment (%(bytes)s "
            "bytes; left out: mailboxes %(mailboxes)s, folders %(folders)s)"
        )
        say(
            increment if result["sent"]["kind"] == "incremental" else full,
            domain=domain.name,
            snapshot=result["sent"]["snapshot"],
            target=setting.target.name,
            bytes=result["bytes"],
            mailboxes=", ".join(left["mailboxes"]) or "-",
            folders=", ".join(left["folders"]) or "-",
        )
    archives = result["manifest"]["archives"]
    record(
        domain,
        setting.node,
        kind=OffnodeCopy.ARCHIVE,
        location=offnode_archive.manifest_name(domain.name),
        target=setting.target,
        snapshots=[a["snapshot"] for a in archives],
        bytes_sent=result["bytes"],
        left_out=archives[-1]["left_out"] if archives else {},
        members=offnode_archive.members_by_snapshot(archives),
        archive_kinds={a["snapshot"]: a.get("kind", "full") for a in archives},
    )
    summary["target"].append({"domain": domain.name, "archive": result["sent"]})
