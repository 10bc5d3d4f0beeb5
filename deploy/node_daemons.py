"""Restart, reboot and shutdown acting on a node's real daemons, with or without systemd.

With systemd (production RockyLinux/Debian hosts) the init system owns the daemons:
restart is ``systemctl restart``, reboot and shutdown are the machine's own, and the
units converge enabled bring the daemons back. Without systemd (a container, a network
and mount namespace as on the test nodes) nothing on the node starts our daemons: the
controller is the node's init. Then

* restart of a service converge manages = its :meth:`Service.stop`, then
  :meth:`Service.start`, which brings it up from the files live on the node (what converge
  installed last), never from a new rendering;
* reboot = stop every managed service (last first), then start them all again in the
  registry's order, as an init's run levels would (the same as a namespace that lost all
  its processes and then runs :func:`boot`);
* shutdown = stop every managed service; sshd stays, so the node can be started again
  (the "start services" action runs :func:`boot`).

A service is *managed on the node* when its role applies and converge recorded an
install there (its ``.ums-state-<name>`` file exists): restarting a name it does not
know goes to the node's own ``service``/``systemctl`` command as before.
"""

from __future__ import annotations

from typing import Any

from servers.models import Node

from . import node_ops
from .connector.base import CommandFailed, Connector
from .services.base import CheckFailed, Service
from .services.daemon import running_pids

# Arguments: state files. Prints those that exist.
_EXISTING = 'for f in "$@"; do [ -f "$f" ] && echo "$f"; done; exit 0'


def managed(conn: Connector, node: Node) -> list[Service]:
    """The services converge installed on ``node``, in the registry's (start) order."""
    from . import converge, desired
    from .services import registry

    view = desired.node_view(node)
    candidates = [
        s.for_node(view) for s in registry.SERVICES if s.applies_to(view) and s.config_root
    ]
    if not candidates:
        return []
    files = [converge.state_file(s) for s in candidates]
    found = set(conn.run(["sh", "-c", _EXISTING, "sh", *files], timeout=60).stdout.split())
    return [s for s, f in zip(candidates, files, strict=True) if f in found]


def find(services: list[Service], name: str) -> Service | None:
    return next((s for s in services if name == s.name or name in s.unit_names), None)


def _start(conn: Connector, service: Service) -> list[int]:
    service.start(conn)
    return running_pids(conn, service.pidfiles(conn))


def restart(conn: Connector, node: Node, name: str) -> dict[str, Any]:
    """Restart service ``name`` (validated by the caller) on the node."""
    if not node_ops.uses_systemd(conn):
        service = find(managed(conn, node), name)
        from .node_storage import STORAGE_SERVICES

        if service is not None and service.name in STORAGE_SERVICES and storage_stopped(node):
            # restart_service reports CheckFailed's output as the job's reason.
            raise CheckFailed(service.name, "storage is stopped on this node: start it first")
        if service is not None:
            stopped = service.stop(conn)
            return {"service": service.name, "stopped": stopped, "started": _start(conn, service)}
    result = node_ops.service_command(conn, name, "restart")
    return {
        "service": name,
        "exit_code": result.exit_code,
        "stdout": result.stdout[-5000:],
        "stderr": result.stderr[-2000:],
    }


def halt(conn: Connector, node: Node) -> dict[str, list[int]]:
    """Stop every managed service, the last started first; pids stopped per service."""
    return {s.name: s.stop(conn) for s in reversed(managed(conn, node))}


def storage_stopped(node: Node) -> bool:
    """Storage stop requested (deploy/node_storage.py): the mail store's services stay
    down through reboots and "start all services", or they would write beneath the
    unmounted datasets."""
    return Node.objects.filter(pk=node.pk, storage_requested="stopped").exists()


def boot(conn: Connector, node: Node) -> dict[str, Any]:
    """Start every managed service from its live files, in order. A service that does
    not start does not keep the others down: its reason is returned under ``failed``."""
    from .node_storage import STORAGE_SERVICES

    started: dict[str, list[int]] = {}
    failed: dict[str, str] = {}
    held = STORAGE_SERVICES if storage_stopped(node) else ()
    for service in managed(conn, node):
        if service.name in held:
            continue
        try:
            started[service.name] = _start(conn, service)
        except CheckFailed as exc:
            failed[service.name] = exc.output[-2000:]
        except CommandFailed as exc:
            failed[service.name] = str(exc)[-2000:]
    return {"started": started, "failed": failed}


def reboot(conn: Connector, node: Node) -> dict[str, Any]:
    if node_ops.uses_systemd(conn):
        result = node_ops.reboot(conn)
        return {"systemd": True, "exit_code": None if result is None else result.exit_code}
    return {"systemd": False, "stopped": halt(conn, node), **boot(conn, node)}


def shutdown(conn: Connector, node: Node) -> dict[str, Any]:
    if node_ops.uses_systemd(conn):
        result = node_ops.poweroff(conn)
        return {"systemd": True, "exit_code": None if result is None else result.exit_code}
    return {"systemd": False, "stopped": halt(conn, node)}
