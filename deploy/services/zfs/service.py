"""The ZFS mail store on IMAP nodes: one dataset per domain, never destroyed by converge.

Unlike the other services this one manages no files: its state is ZFS datasets and
their properties. :meth:`ZfsService.plan` reads facts from the node and returns the
``zfs`` commands that would bring it to the desired state (an empty list when nothing is
to do; the dry run shows it with :func:`describe_plan`); :meth:`ZfsService.apply` runs
them. Only ``zfs create`` and ``zfs set`` are ever planned or accepted by ``apply``: a
domain removed from the desired state keeps its dataset (mail is only destroyed by an
explicit, separate operation), and :func:`orphans` lists such datasets for operators.

Facts come from ``zfs get -Hp -o name,property,value``: zfs-fuse 0.7 (the test
machines) has no ``zfs list -p`` nor JSON output, and the command is the same on
production OpenZFS, so one code path serves both.

Converge drives it through the Service contract's preparation step
(:meth:`ZfsService.prepare` / :meth:`ZfsService.apply_preparation`), which runs before any
service installs files, so the datasets are mounted before Courier creates Maildirs in
them. The step only runs when ``mail_store_pool`` is set (``UMS_CONVERGE``); a node where
that pool does not exist keeps plain directories (the converge result says so), unless
its mail store was on ZFS before (see :data:`MARKER`): then converge stops rather than
create Maildirs on the root filesystem beneath an unmounted mail store.

Inputs from ``DesiredState``: every domain in ``state.domains`` the node holds
(``DomainData.node_id`` is the node or unknown) gets ``<dataset>/<domain>`` with ``quota``
from ``DomainData.quota_mb`` (``None``: no quota), mounted at ``<mail_root>/<domain>``
where Postfix and Courier keep that domain's Maildirs (when ``mail_root`` is set; else it
inherits the parent's mountpoint). ``settings`` keys, all optional:

* ``mail_store_pool`` (no default for converge: unset means no ZFS anywhere; the
  :meth:`ZfsService.plan` helper assumes ``"mailstore"``): the node's pool;
* ``mail_store_dataset`` (default ``"<pool>/mail"``): parent of the domain datasets,
  created when missing (with ``mail_store_mountpoint`` as its mountpoint when given);
* ``mail_store_compression`` (default ``"on"``): the ``compression`` property;
* ``mail_store_dedup`` (default ``"auto"``): deduplication. The product sheet allows it
  only on nodes with more than 256 GB of RAM (the dedup table must fit in memory), so
  it is on only when the node reports more than that *and* the setting is not false.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from deploy.connector.base import Connector
from deploy.services.base import (
    DesiredState,
    DomainData,
    ManagedFile,
    Preparation,
    PrepareFailed,
    Service,
)

from . import release

__all__ = [
    "DEDUP_MIN_MEMORY_BYTES",
    "MailStoreError",
    "MailStoreFacts",
    "ZfsService",
    "dedup_allowed",
    "describe_plan",
    "orphans",
]

#: "over 256GB RAM available": dedup only above this much memory.
DEDUP_MIN_MEMORY_BYTES = 256 * 1024**3

_PROPERTIES = ("compression", "dedup", "quota", "type", "mountpoint", "mounted", "readonly")

#: Written under ``mail_root`` once the node's mail store is on ZFS. Should the pool later
#: be missing (not imported after a reboot, failed disk), converge refuses to go on: it
#: would otherwise fall back to plain directories and create Maildirs on the root
#: filesystem where the datasets belong, hiding mail once the pool is back.
MARKER = ".ums-mail-store-zfs"

# Lists which of the paths given on stdin (NUL-separated) are non-empty directories. A
# constant script: the paths are arguments of find, never shell code.
_NON_EMPTY_SCRIPT = (
    'xargs -0 -r sh -c \'find "$@" -mindepth 1 -maxdepth 1 -printf "%H\\n" 2>/dev/null; exit 0\' sh'
)
# ZFS component names allow [A-Za-z0-9_.:-]; domains are IDNA (letters, digits, hyphens,
# dots), so anything else is refused before it can reach a command line.
_DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$"
)
_DATASET_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]*(/[A-Za-z0-9][A-Za-z0-9_.:-]*)*$")
_PATH_RE = re.compile(r"^(/[A-Za-z0-9_.:+-]+)+$")
_COMPRESSION_RE = re.compile(r"^(on|off|lzjb|lz4|zle|zstd(-[0-9]+)?|gzip(-[1-9])?)$")


class MailStoreError(PrepareFailed):
    """The mail store cannot be planned or a ``zfs`` command failed (with its output)."""


@dataclass(frozen=True)
class MailStoreFacts:
    """What the node has: ``datasets[name][property] = value`` and its memory."""

    pool_exists: bool
    datasets: dict[str, dict[str, str]]
    memory_bytes: int


def dedup_allowed(memory_bytes: int, setting: object = "auto") -> bool:
    """True when dedup may be on: not disabled by the setting and more than 256 GB RAM."""
    if setting is False or str(setting).lower() in ("false", "off", "no", "0"):
        return False
    return memory_bytes > DEDUP_MIN_MEMORY_BYTES


def describe_plan(plan: list[list[str]]) -> str:
    """The plan as shell lines, for the dry run."""
    return "\n".join(shlex.join(argv) for argv in plan)


class ZfsService(Service):
    """Mail store datasets. ``render`` returns no files; use ``plan``/``apply``."""

    name = "zfs"
    roles = frozenset({"imap"})
    # Nothing installed by converge: ZFS needs kernel modules (DKMS from Debian contrib,
    # the OpenZFS repository on Rocky) and a pool built from the node's disks, both an
    # operator's decision at bootstrap. A node that has the pool has the tools.
    packages: dict[str, tuple[str, ...]] = {}
    config_root = ""

    def applies_to_state(self, state: DesiredState) -> bool:
        """Only where the deployment uses a ZFS mail store (``mail_store_pool`` set)."""
        return self.applies_to(state.node) and bool(state.settings.get("mail_store_pool"))

    # ------------------------------------------------------------------ settings

    @staticmethod
    def _layout(settings: Mapping[str, object]) -> tuple[str, str, str]:
        pool = str(settings.get("mail_store_pool") or "mailstore")
        parent = str(settings.get("mail_store_dataset") or f"{pool}/mail")
        compression = str(settings.get("mail_store_compression") or "on")
        if not _DATASET_RE.match(pool) or "/" in pool:
            raise MailStoreError(f"invalid pool name {pool!r}")
        if not _DATASET_RE.match(parent) or not parent.startswith(pool + "/"):
            raise MailStoreError(f"invalid mail store dataset {parent!r} (must be under {pool})")
        if not _COMPRESSION_RE.match(compression):
            raise MailStoreError(f"invalid compression {compression!r}")
        return pool, parent, compression

    @staticmethod
    def _mail_root(settings: Mapping[str, object]) -> str | None:
        """Where domain datasets are mounted (``<mail_root>/<domain>``), if configured."""
        root = settings.get("mail_root")
        if not root:
            return None
        root = str(root).rstrip("/")
        if not _PATH_RE.match(root) or "/../" in f"{root}/" or "/./" in f"{root}/":
            raise MailStoreError(f"invalid mail root {root!r}")
        return root

    @staticmethod
    def dataset_for(parent: str, domain: str) -> str:
        """``<parent>/<domain>``, refusing any domain that is not a plain IDNA name."""
        if not _DOMAIN_RE.match(domain):
            raise MailStoreError(f"invalid domain name {domain!r}")
        return f"{parent}/{domain}"

    # ------------------------------------------------------------------ facts

    def facts(self, conn: Connector, state: DesiredState) -> MailStoreFacts:
        """Read the pool, the datasets under the mail store and the node's memory."""
        pool, parent, _compression = self._layout(state.settings)
        pool_result = conn.run(["zpool", "list", "-H", "-o", "name", pool])
        datasets: dict[str, dict[str, str]] = {}
        if pool_result.ok:
            result = conn.run(
                [
                    "zfs",
                    "get",
                    "-Hp",
                    "-r",
                    "-o",
                    "name,property,value",
                    ",".join(_PROPERTIES),
                    parent,
                ]
            )
            if result.ok:
                for line in result.stdout.splitlines():
                    parts = line.split("\t")
                    if len(parts) == 3:
                        datasets.setdefault(parts[0], {})[parts[1]] = parts[2]
            elif "does not exist" not in result.stderr:
                raise MailStoreError(f"zfs get failed: {result.stderr.strip()}")
        meminfo = conn.run(["cat", "/proc/meminfo"]).check().stdout
        match = re.search(r"^MemTotal:\s+(\d+)\s+kB", meminfo, re.MULTILINE)
        memory = int(match.group(1)) * 1024 if match else 0
        return MailStoreFacts(pool_result.ok, datasets, memory)

    # ------------------------------------------------------------------ plan, apply

    def plan(self, conn: Connector, state: DesiredState) -> list[list[str]]:
        """The ``zfs create``/``zfs set`` commands the node needs; ``[]`` when in step."""
        return self.plan_from_facts(self.facts(conn, state), state)

    def plan_from_facts(self, facts: MailStoreFacts, state: DesiredState) -> list[list[str]]:
        """Pure part of :meth:`plan`, testable without a node."""
        pool, parent, compression = self._layout(state.settings)
        if not facts.pool_exists:
            raise MailStoreError(f"pool {pool!r} does not exist on {state.node.hostname}")
        dedup = (
            "on"
            if dedup_allowed(facts.memory_bytes, state.settings.get("mail_store_dedup", "auto"))
            else "off"
        )
        mail_root = self._mail_root(state.settings)
        plan: list[list[str]] = []
        if parent not in facts.datasets:
            create = ["zfs", "create", "-p"]
            mountpoint = state.settings.get("mail_store_mountpoint")
            if mountpoint:
                if not str(mountpoint).startswith("/") or "\n" in str(mountpoint):
                    raise MailStoreError(f"invalid mountpoint {mountpoint!r}")
                create += ["-o", f"mountpoint={mountpoint}"]
            plan.append([*create, parent])
        for domain in sorted(state.domains, key=lambda d: d.name):
            dataset = self.dataset_for(parent, domain.name)
            quota_bytes = (domain.quota_mb or 0) * 1024 * 1024
            want = {"compression": compression, "dedup": dedup, "quota": str(quota_bytes)}
            if mail_root:
                want["mountpoint"] = f"{mail_root}/{domain.name}"
            have = facts.datasets.get(dataset)
            if have is None:
                create = [
                    "zfs",
                    "create",
                    "-o",
                    f"compression={compression}",
                    "-o",
                    f"dedup={dedup}",
                ]
                if quota_bytes:
                    create += ["-o", f"quota={domain.quota_mb}M"]
                if mail_root:
                    create += ["-o", f"mountpoint={want['mountpoint']}"]
                plan.append([*create, dataset])
                continue
            if have.get("readonly") == "on":
                # A promoted replica (replication.failover): this node now serves it.
                plan.append(["zfs", "set", "readonly=off", dataset])
            # A dataset whose mountpoint is about to change is mounted by that change
            # (a promoted replica has mountpoint=none: "zfs mount" would fail on it).
            moving = "mountpoint" in want and have.get("mountpoint") != want["mountpoint"]
            if have.get("mounted") == "no" and not moving and have.get("mountpoint") != "none":
                # e.g. after a daemon restart: Courier must not create Maildirs beneath.
                plan.append(["zfs", "mount", dataset])
            for prop, value in want.items():
                if have.get(prop) != value:
                    shown = (
                        value
                        if prop != "quota"
                        else (f"{domain.quota_mb}M" if quota_bytes else "none")
                    )
                    plan.append(["zfs", "set", f"{prop}={shown}", dataset])
        plan.extend(self._replica_plan(facts, state, parent))
        return plan

    def _replica_plan(
        self, facts: MailStoreFacts, state: DesiredState, parent: str
    ) -> list[list[str]]:
        """Datasets this node holds as replicas (``replica_domains``, from the
        replication app) or was fenced from: read-only and unmounted, so neither Courier
        nor the LDA can serve or change them. Set before any service renders (converge
        runs preparations first): a fenced former primary stops serving at once."""
        held = {d.name for d in state.domains if d.node_id in (None, state.node.id)}
        plan: list[list[str]] = []
        for name in sorted(set(state.settings.get("replica_domains") or ()) - held):
            dataset = self.dataset_for(parent, str(name))
            have = facts.datasets.get(dataset)
            if have is None:
                continue  # not received yet: the sync job creates it
            if have.get("readonly") != "on":
                plan.append(["zfs", "set", "readonly=on", dataset])
            if have.get("mountpoint") != "none":
                if have.get("mounted") == "yes":
                    # Unmounted first, stopping what holds it (apply): an IMAP session or
                    # a delivery still open on a demoted primary holds the mount busy, and
                    # "zfs set mountpoint=none" alone then fails with "target is busy".
                    plan.append(["zfs", "unmount", dataset])
                plan.append(["zfs", "set", "mountpoint=none", dataset])
        return plan

    def apply(self, conn: Connector, plan: list[list[str]]) -> None:
        """Run a plan from :meth:`plan`; refuses anything but ``zfs create``/``set``/
        ``mount``/``unmount`` (the last releasing a demoted replica's busy mount)."""
        for argv in plan:
            if argv[:2] not in (
                ["zfs", "create"],
                ["zfs", "set"],
                ["zfs", "mount"],
                ["zfs", "unmount"],
            ) or (argv[1] == "unmount" and len(argv) != 3):
                # Defence in depth: the mail store is never destroyed, renamed or rolled
                # back by converge, whatever a caller passes in.
                raise MailStoreError(f"refusing to run {shlex.join(argv)}")
        for argv in plan:
            if argv[1] == "unmount":
                self._unmount(conn, argv[2])
                continue
            result = conn.run(argv)
            if not result.ok:
                raise MailStoreError(
                    f"{shlex.join(argv)} failed: {(result.stderr or result.stdout).strip()}"
                )

    @staticmethod
    def _unmount(conn: Connector, dataset: str) -> None:
        """Unmount a demoted replica, stopping the processes that hold it busy (already
        unmounted since the facts were read, by a fence or failback job: nothing to do)."""
        result = conn.run(["zfs", "get", "-H", "-o", "value", "mountpoint", dataset])
        mountpoint = result.stdout.strip() if result.ok else ""
        try:
            release.unmount_releasing(conn, dataset, mountpoint)
        except release.UnmountFailed as exc:
            raise MailStoreError(str(exc)) from exc

    # ------------------------------------------------------------------ converge step

    @staticmethod
    def held_domains(state: DesiredState) -> list[DomainData]:
        """The domains placed on this node (or of unknown placement)."""
        return [d for d in state.domains if d.node_id in (None, state.node.id)]

    def prepare(self, conn: Connector, state: DesiredState) -> Preparation | None:
        """Plan the mail store for converge: datasets to create/fix, orphans, the marker."""
        if not state.settings.get("mail_store_pool"):
            return None
        pool, parent, _compression = self._layout(state.settings)
        mail_root = self._mail_root(state.settings)
        held = dataclasses.replace(state, domains=self.held_domains(state))
        facts = self.facts(conn, held)
        marker = f"{mail_root}/{MARKER}" if mail_root else None
        has_marker = bool(marker) and conn.run(["test", "-e", marker]).ok
        if not facts.pool_exists:
            if has_marker:
                raise MailStoreError(
                    f"pool {pool!r} is missing on {state.node.hostname} but its mail store "
                    f"is on ZFS ({marker} exists): import the pool, then converge again"
                )
            return Preparation(
                report={"storage": "directories", "reason": f"pool {pool} not found"}
            )
        # A domain whose Maildirs already live in a plain directory is not moved under a
        # new dataset: mounting over it would hide its mail. It stays as it is, listed.
        unmigrated: list[str] = []
        if mail_root:
            missing = [
                d.name
                for d in held.domains
                if self.dataset_for(parent, d.name) not in facts.datasets
            ]
            unmigrated = self._non_empty(conn, mail_root, missing)
        if unmigrated:
            held.domains = [d for d in held.domains if d.name not in unmigrated]
        commands = self.plan_from_facts(facts, held)
        if marker and not has_marker:
            commands.append(self._marker_command(marker))
        report: dict[str, object] = {
            "storage": "zfs",
            "pool": pool,
            "dataset": parent,
            "orphans": orphans(facts, held, parent),
        }
        if unmigrated:
            report["unmigrated"] = unmigrated
        return Preparation(commands=commands, report=report, data={"marker": marker})

    @staticmethod
    def _marker_command(marker: str) -> list[str]:
        return ["install", "-D", "-m", "0644", "/dev/null", marker]

    @staticmethod
    def _non_empty(conn: Connector, mail_root: str, domains: list[str]) -> list[str]:
        if not domains:
            return []
        paths = [f"{mail_root}/{name}" for name in domains]
        result = conn.run(
            ["sh", "-c", _NON_EMPTY_SCRIPT], input="\0".join(paths).encode(), timeout=600
        )
        found = set(result.stdout.splitlines())
        return [name for name, path in zip(domains, paths, strict=True) if path in found]

    def apply_preparation(self, conn: Connector, preparation: Preparation) -> None:
        """``zfs`` commands through :meth:`apply` (never a destroy), then the marker."""
        marker = preparation.data.get("marker")
        marker_command = self._marker_command(marker) if marker else None
        self.apply(conn, [argv for argv in preparation.commands if argv != marker_command])
        if marker_command and marker_command in preparation.commands:
            result = conn.run(marker_command)
            if not result.ok:
                raise MailStoreError(f"writing {marker} failed: {result.stderr.strip()}")

    # ------------------------------------------------------------------ Service

    def render(self, state: DesiredState) -> list[ManagedFile]:
        """No files: the mail store is datasets (see :meth:`plan`)."""
        return []

    def validate(self, conn: Connector, staged_root: str) -> None:
        """Nothing to check: ``zfs`` validates each property as it is set."""

    def activate(self, conn: Connector, changed: list[ManagedFile]) -> None:
        """Nothing to reload."""


def orphans(facts: MailStoreFacts, state: DesiredState, parent: str | None = None) -> list[str]:
    """Domain datasets on the node that the desired state no longer has (kept, listed)."""
    parent = parent or ZfsService._layout(state.settings)[1]
    wanted = {f"{parent}/{d.name}" for d in state.domains}
    wanted |= {f"{parent}/{name}" for name in state.settings.get("replica_domains") or ()}
    return sorted(
        name
        for name, props in facts.datasets.items()
        if name.startswith(parent + "/")
        and "/" not in name[len(parent) + 1 :]
        and props.get("type") == "filesystem"
        and name not in wanted
    )
