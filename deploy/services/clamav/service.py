"""ClamAV on SMTP nodes where anti-virus is on: ``clamd.conf`` and the scan endpoint.

Anti-virus is part of the effective filtering policy (``policy["antivirus"]``, on by
default). clamd is node-wide, so it is configured when *any* domain on the node has it
on (or ``settings["antivirus"]`` forces it); :func:`antivirus_domains` tells the Postfix
side which domains to scan, and :func:`scan_endpoint` where clamd listens.

Validation: ``clamconf -c <staged dir>`` parses the staged ``clamd.conf``. It exits 0
even on a parse error, so its output is checked for ``ERROR``. clamd itself has no
"check only" mode, and it refuses to start without a signature database, so the tests
also start a real clamd with the rendered file and a local EICAR database.

Paths are Debian's (``/etc/clamav``). Rocky's clamd reads ``/etc/clamd.d/scan.conf``
and runs as ``clamscan``: :meth:`ClamAVService.render` follows ``node.os_family`` for
the file, but ``config_root`` (one per class) is Debian's, so on Rocky the converge
engine stages ``/etc/clamd.d`` via :meth:`ClamAVService.config_root_for`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import Any

from deploy.connector.base import Connector
from deploy.services.base import CheckFailed, DesiredState, ManagedFile, NodeView, Service

__all__ = ["CLAMD_TCP", "ClamAVService", "antivirus_domains", "antivirus_enabled", "scan_endpoint"]

CLAMD_TCP = ("127.0.0.1", 3310)
_SOCKET = {"debian": "/run/clamav/clamd.ctl", "rhel": "/run/clamd.scan/clamd.sock"}
_VALUE_RE = re.compile(r"^[A-Za-z0-9_./:-]+$")


def _on(value: object) -> bool:
    if isinstance(value, Mapping):  # {"value": ..., "source": ...} from effective_filtering
        value = value.get("value")
    return value is True or str(value).lower() in ("true", "1", "yes", "on")


def antivirus_domains(state: DesiredState) -> list[str]:
    """Domains (and alias domains) whose effective policy turns anti-virus on."""
    names: list[str] = []
    for domain in sorted(state.domains, key=lambda d: d.name):
        # Missing key: the product default (mail.choices.DEFAULT_ANTIVIRUS) is on.
        if _on((domain.policy or {}).get("antivirus", True)):
            names += [domain.name, *domain.aliases]
    return names


def antivirus_enabled(state: DesiredState) -> bool:
    """True when clamd is needed on this node."""
    forced = state.settings.get("antivirus")
    if forced is not None:
        return _on(forced)
    return bool(antivirus_domains(state))


def scan_endpoint(node: NodeView) -> dict[str, Any]:
    """Where clamd listens on ``node``: a local socket and loopback TCP (for milters)."""
    return {"socket": _SOCKET.get(node.os_family, _SOCKET["debian"]), "tcp": CLAMD_TCP}


class ClamAVService(Service):
    """clamd's configuration.

    ``config_root`` and ``overrides`` are for tests: ``overrides`` replaces options
    (``None`` removes one), e.g. a private ``LocalSocket``/``DatabaseDirectory``, or
    adds an invalid option to prove the checker refuses it.
    """

    name = "clamav"
    # Cloud files nodes too: Nextcloud's files_antivirus scans uploads with the node's clamd.
    roles = frozenset({"smtp", "cloudfiles"})
    packages = {"debian": ("clamav", "clamav-daemon"), "rhel": ("clamav", "clamd")}
    config_root = "/etc/clamav"

    def __init__(
        self, *, config_root: str | None = None, overrides: Mapping[str, str | None] | None = None
    ) -> None:
        if config_root is not None:
            self.config_root = config_root.rstrip("/")
        self.overrides = dict(overrides or {})

    def config_root_for(self, node: NodeView) -> str:
        """The directory holding clamd's configuration on ``node``."""
        return (
            "/etc/clamd.d"
            if node.os_family == "rhel" and self.config_root == "/etc/clamav"
            else self.config_root
        )

    def options(self, state: DesiredState) -> dict[str, str]:
        """clamd options in file order, overrides applied."""
        rhel = state.node.os_family == "rhel"
        max_mb = int(state.settings.get("clamav_max_file_size_mb") or 25)
        if not 0 < max_mb <= 4000:
            raise ValueError(f"invalid clamav_max_file_size_mb {max_mb!r}")
        options: dict[str, str | None] = {
            "LocalSocket": scan_endpoint(state.node)["socket"],
            "LocalSocketGroup": "clamscan" if rhel else "clamav",
            "LocalSocketMode": "660",
            "FixStaleSocket": "true",
            # Loopback TCP as well, for a milter or filter not sharing the socket group.
            "TCPSocket": str(CLAMD_TCP[1]),
            "TCPAddr": CLAMD_TCP[0],
            "User": "clamscan" if rhel else "clamav",
            "DatabaseDirectory": "/var/lib/clamav",
            "PidFile": "/run/clamd.scan/clamd.pid" if rhel else "/run/clamav/clamd.pid",
            "LogFile": "/var/log/clamd.scan" if rhel else "/var/log/clamav/clamav.log",
            "LogTime": "true",
            "Foreground": "false",
            "ScanMail": "true",
            "ScanArchive": "true",
            "ScanPE": "true",
            "ScanOLE2": "true",
            "ScanPDF": "true",
            "ScanHTML": "true",
            "MaxThreads": "12",
            # Mail bigger than this is passed unscanned by size limits, not refused by clamd.
            "MaxFileSize": f"{max_mb}M",
            "StreamMaxLength": f"{max_mb}M",
            "MaxScanSize": f"{max_mb * 4}M",
            "SelfCheck": "3600",
        }
        options.update(self.overrides)
        result: dict[str, str] = {}
        for key, value in options.items():
            if value is None:
                continue
            if not re.match(r"^[A-Za-z][A-Za-z0-9]*$", key) or not _VALUE_RE.match(value):
                raise ValueError(f"invalid clamd option {key} {value!r}")
            result[key] = value
        return result

    def render(self, state: DesiredState) -> list[ManagedFile]:
        """``clamd.conf``; no files at all when no domain on the node wants anti-virus."""
        if not antivirus_enabled(state):
            return []
        body = "# Managed by UMS: local changes are overwritten.\n" + "".join(
            f"{key} {value}\n" for key, value in self.options(state).items()
        )
        root = self.config_root_for(state.node)
        filename = "scan.conf" if root == "/etc/clamd.d" else "clamd.conf"
        return [ManagedFile(f"{root}/{filename}", body.encode())]

    def validate(self, conn: Connector, staged_root: str) -> None:
        """``clamconf -c`` on the staged directory; its ERROR lines fail the check."""
        result = conn.run(["clamconf", "-c", staged_root])
        output = (result.stdout + result.stderr).strip()
        errors = [line for line in output.splitlines() if line.startswith("ERROR")]
        if not result.ok or errors:
            raise CheckFailed(self.name, "\n".join(errors) or output)

    unit_names = ("clamav-daemon", "clamd", "clamd@scan")

    def _live_conf(self, conn: Connector) -> ManagedFile | None:
        filename = "scan.conf" if self.config_root == "/etc/clamd.d" else "clamd.conf"
        path = f"{self.config_root}/{filename}"
        content = conn.get_file(path)
        return None if content is None else ManagedFile(path, content)

    def pidfiles(self, conn: Connector) -> list[str]:
        conf = self._live_conf(conn)
        if conf is None:
            return []
        for line in conf.content.decode(errors="replace").splitlines():
            key, _sep, value = line.partition(" ")
            if key == "PidFile" and value.startswith("/"):
                return [value.strip()]
        return []

    def start(self, conn: Connector) -> None:
        """clamd with the live ``clamd.conf``, unless it runs (or anti-virus is off)."""
        from deploy.services.daemon import running_pids

        conf = self._live_conf(conn)
        if conf is None or running_pids(conn, self.pidfiles(conn)):
            return
        self.activate(conn, [conf])

    def activate(self, conn: Connector, changed: list[ManagedFile]) -> None:
        """(Re)start clamd: it reads ``clamd.conf`` only at start (RELOAD is signatures)."""
        unit = "clamav-daemon"
        if any(f.path.startswith("/etc/clamd.d/") for f in changed):
            unit = "clamd@scan"
        if conn.run(["systemctl", "cat", unit]).ok:
            conn.run(["systemctl", "enable", unit])
            conn.run(["systemctl", "restart", unit], timeout=600).check()
            return
        # No systemd (containers, the test machines). Debian's init script refuses to
        # start without the downloaded main/daily databases (a node with only local
        # signatures is valid), so run clamd directly with the rendered file.
        conf = next((f for f in changed if f.path.endswith((".conf",))), None)
        if conf is None:
            return
        options = dict(
            line.split(" ", 1)
            for line in conf.content.decode().splitlines()
            if line and not line.startswith("#")
        )
        pidfile = options.get("PidFile", "")
        if pidfile:
            pid = (conn.get_file(pidfile) or b"").strip().decode(errors="replace")
            if pid.isdigit() and conn.run(["kill", "-0", pid]).ok:
                conn.run(["kill", "-TERM", pid])
                # clamd removes its socket on exit; wait so the new one can bind.
                conn.run(
                    [
                        "timeout",
                        "60",
                        "sh",
                        "-c",
                        'while kill -0 "$1"; do sleep 0.2; done',
                        "sh",
                        pid,
                    ]
                )
        user = options.get("User")
        for key in ("PidFile", "LocalSocket", "LogFile"):
            if options.get(key):
                folder = posixpath.dirname(options[key])
                conn.run(["mkdir", "-p", folder]).check()
                if user:
                    conn.run(["chown", user, folder]).check()
        result = conn.run(["clamd", "--config-file", conf.path], timeout=600)
        if not result.ok:
            raise CheckFailed(self.name, f"clamd did not start:\n{result.stdout}{result.stderr}")
