"""Enrol the demo nodes the way an operator does: ``bootstrapcore.sh`` on each node.

The portal of ``make run`` is not serving yet (and listens on loopback, which the nodes'
namespaces cannot reach), so a temporary portal (this Django project, plain HTTP, the
development mode bootstrapcore.sh accepts) listens on the bridge address while the nodes
download the script and register. Then the administrator gives each node its role and
approves it, which converges it (``UMS_CONVERGE_ON_APPROVAL``).
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.core.wsgi import get_wsgi_application
from django.test.utils import override_settings
from django.utils.translation import gettext as _

from servers import actions as server_actions
from servers import enrolment
from servers.choices import NodeStatus
from servers.install import SCRIPT_PATH
from servers.models import Node, Zone
from tenants.models import Administrator, Customer

from ..catalogue import ROOT

ZONE_NAME = "Demo DC"
NODE_SCRIPT = "/root/bootstrapcore.sh"


class EnrolmentFailed(RuntimeError):
    pass


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def temporary_portal(address: str) -> Iterator[str]:
    """This project served over HTTP on ``address`` for the block; its base URL."""
    server = ThreadedWSGIServer((address, 0), _QuietHandler, allow_reuse_address=True)
    server.set_app(get_wsgi_application())
    base_url = f"http://{address}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    overrides = {
        "BASE_URL": base_url,
        "ALLOWED_HOSTS": [address, "127.0.0.1", "localhost"],
        "SECURE_SSL_REDIRECT": False,
    }
    with override_settings(**overrides):
        thread.start()
        try:
            yield base_url
        finally:
            server.shutdown()
            server.server_close()


def in_node(node: dict[str, Any], argv: list[str], timeout: float = 180) -> str:
    """Run ``argv`` inside a demo node (its network, hostname and private mounts)."""
    prefix = ["nsenter", "-t", str(node["sshd_pid"]), "-m", "-u", "-n"]
    proc = subprocess.run(
        [*prefix, *argv], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise EnrolmentFailed(f"{' '.join(argv)} on {node['name']}: {proc.stdout}{proc.stderr}")
    return proc.stdout


def zone(admin: Administrator | None) -> Zone:
    root = Customer.objects.get(parent=None, name=ROOT)
    found = Zone.objects.filter(customer=root, name=ZONE_NAME).first()
    return found or server_actions.create_zone(
        actor=admin, customer=root, name=ZONE_NAME, location="this machine"
    )


def known_node(in_zone: Zone, node: dict[str, Any]) -> Node | None:
    """The node row of a demo node enrolled by an earlier run (same host key)."""
    candidates = Node.objects.filter(zone=in_zone).exclude(status=NodeStatus.DECOMMISSIONED)
    for row in candidates.filter(reported_host_keys__contains=[node["host_key"]]):
        return row
    return None


def moved(in_zone: Zone, nodes: list[dict[str, Any]]) -> list[Node]:
    """Rows of demo nodes enrolled earlier whose node now runs at another address."""
    rows = [(known_node(in_zone, n), n) for n in nodes]
    return [row for row, n in rows if row is not None and row.ssh_address != n["address"]]


def run_bootstrap(node: dict[str, Any], base_url: str, token: str) -> str:
    """What the operator types on the node (the portal shows the same commands)."""
    in_node(node, ["wget", "-q", "-O", NODE_SCRIPT, base_url + SCRIPT_PATH])
    return in_node(node, ["sh", NODE_SCRIPT, token])


def enrol(
    admin: Administrator | None,
    in_zone: Zone,
    nodes: list[tuple[dict[str, Any], str]],
    bridge_address: str,
    log: Any,
) -> list[Node]:
    """Register (if new), assign the role and approve each ``(node, role)``; node rows."""
    rows: dict[str, Node] = {}
    fresh = [(n, role) for n, role in nodes if known_node(in_zone, n) is None]
    if fresh:
        _token, full = enrolment.create_enrolment_token(
            actor=admin, zone=in_zone, name="demo nodes", max_uses=len(fresh)
        )
        with temporary_portal(bridge_address) as base_url:
            for node, _role in fresh:
                log(run_bootstrap(node, base_url, full).strip())
    for node, role in nodes:
        row = known_node(in_zone, node)
        if row is None:
            raise EnrolmentFailed(f"{node['name']} did not register")
        if row.ssh_address != node["address"]:
            raise EnrolmentFailed(
                f"{row.hostname} was enrolled at {row.ssh_address} and now runs at "
                f"{node['address']}; decommission it in the portal and run again"
            )
        if row.status == NodeStatus.PENDING:
            server_actions.update_node(actor=admin, node=row, roles=[role])
            log(
                _("Approving %(host)s as %(role)s (this converges it)…")
                % {"host": row.hostname, "role": role}
            )
            row = server_actions.approve_node(actor=admin, node=row)
        rows[node["name"]] = row
    return [rows[n["name"]] for n, _role in nodes]
