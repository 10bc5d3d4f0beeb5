"""Collabora Online (coolwsd, "LibreOffice Online") on ``office`` nodes.

Collabora is not in Debian: the operator installs ``coolwsd`` and ``code-brand`` from
Collabora's repository (see README, "Office"), so converge installs no package. It owns
``/etc/coolwsd/coolwsd.xml`` (see :mod:`.config` for what is in it), checks the staged
file is well-formed XML carrying the values UMS owns, restarts coolwsd when it changed
(coolwsd reads its configuration at start only) and then probes the running server: WOPI
discovery, capabilities and a real export to PDF through ``convert-to``
(:mod:`.probe`). A probe that fails rolls the file back.

Restart: ``systemctl`` where the node has the ``coolwsd`` unit, else the node's
``service coolwsd`` (SysV-style nodes without systemd).
"""

from __future__ import annotations

import re

from deploy.connector.base import Connector
from deploy.services.base import CheckFailed, DesiredState, ManagedFile, Service

from . import config, probe

ROOT = "/etc/coolwsd"
XML = f"{ROOT}/coolwsd.xml"
UNIT = "coolwsd"

# argv: the staged coolwsd.xml. The keys UMS owns must be there with the values coolwsd
# needs behind a TLS-terminating load balancer.
_CHECK = r"""
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
want = {"ssl/enable": "false", "ssl/termination": "true"}
for key, value in want.items():
    got = root.findtext(key)
    if got != value:
        sys.exit("%s is %r, expected %r" % (key, got, value))
if not (root.findtext("server_name") or "").strip():
    sys.exit("server_name is empty")
hosts = root.findall("storage/wopi/alias_groups/group/host")
print("ok: %d WOPI host group(s)" % len(hosts))
"""


def credentials(state: DesiredState) -> config.CollaboraData | None:
    data = state.extra.get("collabora")
    return data if isinstance(data, config.CollaboraData) else None


class CollaboraService(Service):
    name = "collabora"
    roles = frozenset({"office"})
    #: From Collabora's own repository, installed by the operator (not in Debian/EPEL).
    packages: dict[str, tuple[str, ...]] = {}
    config_root = ROOT
    unit_names = ("coolwsd",)

    def render(self, state: DesiredState) -> list[ManagedFile]:
        body = config.render(state, credentials(state))
        # Readable by coolwsd's own user only: it holds the admin console's password hash.
        group = str(state.settings.get("collabora_group") or "cool")
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", group):
            raise config.InvalidOfficeValue(f"invalid collabora_group {group!r}")
        return [ManagedFile(XML, body, mode=0o640, group=group)]

    def validate(self, conn: Connector, staged_root: str) -> None:
        python = "/usr/bin/python3"
        result = conn.run([python, "-c", _CHECK, f"{staged_root.rstrip('/')}/coolwsd.xml"])
        if not result.ok:
            raise CheckFailed(self.name, (result.stderr + result.stdout).strip()[-2000:])

    def activate(self, conn: Connector, changed: list[ManagedFile]) -> None:
        verb = "restart" if changed else "start"
        if conn.run(["systemctl", "cat", UNIT]).ok:
            conn.run(["systemctl", "enable", UNIT])
            result = conn.run(["systemctl", verb, UNIT], timeout=120)
        else:
            result = conn.run(["service", UNIT, verb], timeout=120)
        if not result.ok:
            raise CheckFailed(
                self.name, f"coolwsd {verb} failed:\n{(result.stderr + result.stdout).strip()}"
            )

    def stop(self, conn: Connector) -> list[int]:
        if conn.run(["systemctl", "cat", UNIT]).ok:
            conn.run(["systemctl", "stop", UNIT], timeout=120)
        else:
            conn.run(["service", UNIT, "stop"], timeout=120)
        return []

    def probe(self, conn: Connector, state: DesiredState, *, strict: bool = True) -> str:
        """Discovery, capabilities and an export to PDF through the running coolwsd."""
        return probe.export_pdf(conn, state, config.port(state))


SERVICE = CollaboraService()
