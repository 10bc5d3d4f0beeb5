"""Storage stop and start of an IMAP node: its mail datasets and the daemons using them.

What the product does on a real node, without touching the ZFS daemon (one zfs-fuse or
kernel module serves every pool on the machine, and other pools may not be ours):

* **stop**: the services that read or write the mail store stop first, Courier
  (IMAP/POP), the delivery agent and this node's Postfix, which is the delivery path from
  the SMTP nodes: with it down they get "connection refused" and keep the mail queued
  (deferred, never bounced) until it answers again. Then every mounted dataset under the
  node's mail store dataset (``mail_store_dataset``, ``<pool>/mail``) is unmounted with
  ``zfs unmount``, deepest first. Nothing is forced: a dataset still busy fails the step
  with ZFS's reason and the processes holding it, and the reconciler tries again;
  leftovers of the stopped services still inside a dataset (Courier's ``gam_server``,
  an IMAP session that outlived its listener) get SIGTERM (``fuser -k -TERM -m``) first.
* **start**: the datasets are mounted (``zfs mount``), parents first, then those services
  start from the files converge installed last (:mod:`deploy.node_daemons`).

Both are idempotent (a stopped service or an unmounted dataset is left as it is) and read
the node before acting, so a run cut off midway is finished by the next one. With
systemd the services are stopped and started through their units instead.
"""

from __future__ import annotations

from typing import Any

from servers.models import Node

from . import node_daemons, node_ops
from .connector.base import CommandFailed, Connector
from .services.base import CheckFailed, Service
from .services.zfs import release

#: The services that use the mail store, in start order (the registry's order decides).
STORAGE_SERVICES = ("courier", "lda", "postfix")
RUNNING, STOPPED = "running", "stopped"


class StorageError(RuntimeError):
    """A step failed on the node; the message says which and why."""


def layout(node: Node) -> tuple[str, str] | None:
    """``(pool, mail store dataset)`` of the node, or None without a ZFS mail store."""
    from .desired import settings_for
    from .services.zfs import SERVICE as ZFS

    conf = settings_for(node)
    if not conf.get("mail_store_pool"):
        return None
    pool, parent, _compression = ZFS._layout(conf)
    return pool, parent


def datasets(conn: Connector, parent: str) -> list[tuple[str, str, str]]:
    """``(name, mountpoint, mounted)`` of ``parent`` and every filesystem below it."""
    result = conn.run(
        ["zfs", "get", "-H", "-r", "-o", "name,property,value", "mountpoint,mounted,type", parent],
        timeout=120,
    )
    if not result.ok:
        if "does not exist" in result.stderr:
            return []
        raise StorageError(f"zfs get failed: {(result.stderr or result.stdout).strip()}")
    props: dict[str, dict[str, str]] = {}
    for line in result.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            props.setdefault(parts[0], {})[parts[1]] = parts[2]
    return [
        (name, p.get("mountpoint", ""), p.get("mounted", ""))
        for name, p in sorted(props.items())
        if p.get("type") == "filesystem"
    ]


def _zfs(conn: Connector, verb: str, name: str) -> None:
    result = conn.run(["zfs", verb, name], timeout=300)
    if not result.ok:
        raise StorageError(f"zfs {verb} {name}: {(result.stderr or result.stdout).strip()}")


def holders(conn: Connector, mountpoint: str) -> str:
    """Who keeps ``mountpoint`` busy (``fuser -vm``), for the reason shown; "" if unknown."""
    return release.holders(conn, mountpoint)


def unmount(conn: Connector, parent: str) -> list[str]:
    """Unmount every mounted dataset under ``parent``, deepest first; the names.
    Leftovers of the stopped services still inside a dataset (Courier's gam_server
    watching a Maildir, an IMAP session that outlived its listener) get SIGTERM first
    (:func:`deploy.services.zfs.release.unmount_releasing`)."""
    done = []
    for name, mountpoint, mounted in sorted(
        datasets(conn, parent), key=lambda d: d[0].count("/"), reverse=True
    ):
        if mounted == "yes":
            try:
                release.unmount_releasing(conn, name, mountpoint)
            except release.UnmountFailed as exc:
                raise StorageError(str(exc)) from exc
            done.append(name)
    return done


def mount(conn: Connector, parent: str) -> list[str]:
    """Mount every dataset under ``parent`` that has a mountpoint, parents first."""
    done = []
    for name, mountpoint, mounted in sorted(datasets(conn, parent), key=lambda d: d[0].count("/")):
        # "none"/"legacy": not ours to mount (a replica held unmounted, see replication).
        if mounted == "no" and mountpoint.startswith("/"):
            _zfs(conn, "mount", name)
            done.append(name)
    return done


def services(conn: Connector, node: Node) -> list[Service]:
    """The mail store's services converge installed on the node, in start order."""
    return [s for s in node_daemons.managed(conn, node) if s.name in STORAGE_SERVICES]


#: systemctl's exit status for a unit that does not exist on this node.
_NOT_LOADED = 5


def _systemd(conn: Connector, node: Node, verb: str) -> dict[str, Any]:
    """Each service's units (its name and known unit names; those the node does not
    have are skipped) through systemctl. Not exercised by the test nodes (no systemd)."""
    done: dict[str, Any] = {}
    ordered = services(conn, node)
    for service in ordered if verb == "start" else list(reversed(ordered)):
        units = []
        for unit in dict.fromkeys((service.name, *service.unit_names)):
            result = node_ops.service_command(conn, unit, verb)
            if result.exit_code == _NOT_LOADED:
                continue
            if not result.ok:
                raise StorageError(f"{verb} {unit}: {(result.stderr or result.stdout).strip()}")
            units.append(unit)
        done[service.name] = units
    return done


def stop(conn: Connector, node: Node) -> dict[str, Any]:
    """Stop the mail store's services, then unmount its datasets."""
    if node_ops.uses_systemd(conn):
        stopped = _systemd(conn, node, "stop")
    else:
        stopped = {s.name: s.stop(conn) for s in reversed(services(conn, node))}
    found = layout(node)
    unmounted = unmount(conn, found[1]) if found else []
    return {"stopped": stopped, "unmounted": unmounted}


def start(conn: Connector, node: Node) -> dict[str, Any]:
    """Mount the datasets, then start the mail store's services from their live files."""
    found = layout(node)
    mounted = mount(conn, found[1]) if found else []
    if node_ops.uses_systemd(conn):
        return {"mounted": mounted, "started": _systemd(conn, node, "start"), "failed": {}}
    started: dict[str, list[int]] = {}
    failed: dict[str, str] = {}
    for service in services(conn, node):
        try:
            service.start(conn)
            started[service.name] = node_daemons.running_pids(conn, service.pidfiles(conn))
        except CheckFailed as exc:
            failed[service.name] = exc.output[-2000:]
        except CommandFailed as exc:
            failed[service.name] = str(exc)[-2000:]
    return {"mounted": mounted, "started": started, "failed": failed}
