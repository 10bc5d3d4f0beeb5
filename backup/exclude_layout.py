"""Keeping excluded folders and mailboxes out of a domain's ZFS snapshots (issue 13,
item 6): the controller's side of :mod:`backup.exclude_node`.

Before each snapshot pass takes a domain's snapshots (:mod:`backup.snapshot_run`), the
domain's layout is brought in step with its exclusions: the child dataset
``<domain dataset>/.ums-excluded`` is created when needed (it inherits its mountpoint,
``<mail_root>/<domain>/.ums-excluded``, and counts against the domain's quota), then the
node program moves excluded folders and mailboxes into it (links left in their place) and
moves back what is no longer excluded. Level-triggered and idempotent: a pass killed
anywhere is finished by the next one (every scheduled pass, and "Snapshot now").

A domain with no folder or mailbox exclusion and no ``.ums-excluded`` dataset costs
nothing here (no command on the node). The dataset is kept when exclusions are lifted
(empty, mounted): destroying datasets is never done by a converge step.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from deploy.connector.base import Connector
from deploy.services.zfs import ZfsService

from .exclude_node import PROGRAM
from .exclusions import Exclusions

#: The child dataset (and folder) of a domain that snapshots and sends leave out.
STORE = ".ums-excluded"


class ExcludeError(Exception):
    """The layout could not be brought in step; the message is for administrators."""


def mail_root(conf: Mapping[str, Any]) -> str:
    return str(conf.get("mail_root") or "/var/mail/vhosts").rstrip("/")


def store_datasets(conn: Connector, parent: str) -> set[str]:
    """The ``.ums-excluded`` datasets under the mail store's parent dataset (one call)."""
    result = conn.run(["zfs", "list", "-H", "-o", "name", "-t", "filesystem", "-r", parent])
    if not result.ok:
        return set()
    return {n for n in result.stdout.split() if n.endswith(f"/{STORE}")}


def wanted(excl: Exclusions) -> bool:
    return bool(excl.folders or excl.mailboxes) and not excl.domain_excluded


def converge_domain(
    conn: Connector,
    *,
    dataset: str,
    domain: str,
    excl: Exclusions,
    has_store: bool,
    conf: Mapping[str, Any],
    python: str = "python3",
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any] | None:
    """Bring one domain's layout in step; what moved, or None when there was nothing to do."""
    ZfsService.dataset_for(dataset.rsplit("/", 1)[0], domain)  # refuses odd names
    if not wanted(excl) and not has_store:
        return None
    if wanted(excl) and not has_store:
        result = conn.run(["zfs", "create", f"{dataset}/{STORE}"])
        if not result.ok and "exists" not in result.stderr:
            raise ExcludeError(
                f"cannot create {dataset}/{STORE}: {(result.stderr or result.stdout).strip()[:300]}"
            )
        log(f"created {dataset}/{STORE} (excluded folders and mailboxes)")
    params = {
        "root": mail_root(conf),
        "domain": domain,
        "folders": sorted(excl.folders) if wanted(excl) else [],
        "mailboxes": sorted(excl.mailboxes) if wanted(excl) else [],
    }
    result = conn.run([python, "-c", PROGRAM], input=json.dumps(params).encode(), timeout=3600)
    try:
        report = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        report = {"error": (result.stderr or result.stdout).strip()[-500:]}
    if not result.ok or "error" in report:
        raise ExcludeError(f"{domain}: {report.get('error') or result.stderr.strip()[-300:]}")
    for path in report.get("excluded", []):
        log(f"moved {path} out of snapshots")
    for path in report.get("included", []):
        log(f"moved {path} back into snapshots")
    for problem in report.get("problems", []):
        log(problem)
    return report
