"""What the milter daemons on SMTP nodes (OpenDKIM, OpenDMARC) share: a Debian package's
daemon run with UMS's configuration under a root of our own, listening on loopback TCP,
listed by Postfix with ``default_action=accept``.

:class:`MilterService` owns the common steps: turned on per node by one setting, the
package's checker (``-n``) on a copy of the staged configuration naming staged files,
under systemd a drop-in making the package's unit run our configuration
(``Restart=on-failure``, enabled), otherwise our own pid file, and a milter option
negotiation on the port as post-flight probe. A subclass declares its names and renders
its files, and says how it brings a change live (OpenDKIM reloads on SIGUSR1, OpenDMARC
only restarts).
"""

from __future__ import annotations

import ipaddress
import posixpath

from deploy.connector.base import Connector
from deploy.services.base import CheckFailed, DesiredState, ManagedFile, Service

from . import probes
from .postfix import safe

__all__ = ["MILTER_PROBE", "MilterService", "entry", "internal_hosts"]

# argv: host, port, seconds. A milter option negotiation (SMFIC_OPTNEG, version 6): only
# a milter answers it with SMFIC_OPTNEG.
MILTER_PROBE = (
    r"""
import socket, struct, sys, time
host, port = sys.argv[1], int(sys.argv[2])

def attempt():
    try:
        with socket.create_connection((host, port), timeout=10) as s:
            body = b"O" + struct.pack("!III", 6, 0x1FF, 0x1FFFFF)
            s.sendall(struct.pack("!I", len(body)) + body)
            head = s.recv(5)
            if len(head) == 5 and head[4:5] == b"O":
                return True, "milter %s:%d negotiated" % (host, port)
            return False, "milter %s:%d answered %r" % (host, port, head)
    except OSError as exc:
        return False, "%s:%d: %s" % (host, port, exc or type(exc).__name__)
"""
    + probes._RETRY
)

# argv: stage, live root. The staged configuration names live paths; a copy of it
# pointing at the staged files is what the checker parses (it opens every file named).
_CHECK_SCRIPT = r"""
stage=$1; root=$2
sed "s#${root}/#${stage}/#g" "$stage/@CONF@" > "$stage/.check.conf" || exit 1
@CHECKER@ -n @FLAG@ "$stage/.check.conf" 2>&1
rc=$?
rm -f "$stage/.check.conf"
exit $rc
"""

# argv: python, its arguments. Whichever Python the node has (Debian's or RHEL's).
_ANY_PYTHON = (
    'for p in "$0" /usr/libexec/platform-python; do [ -x "$p" ] && exec "$p" "$@"; done; exit 127'
)


def entry(milter: str) -> str:
    """The Postfix milter list element: a milter that is down never defers mail."""
    return f"{{ {milter}, default_action=accept }}"


def internal_hosts(state: DesiredState) -> list[str]:
    """Loopback and the ``relay_networks`` setting: our own clients, never checked."""
    hosts = ["127.0.0.1", "::1"]
    for net in state.settings.get("relay_networks", []) or []:
        try:
            hosts.append(str(ipaddress.ip_network(str(net), strict=True)))
        except ValueError as exc:
            raise safe.UnsafeName(f"refusing relay network {net!r}: {exc}") from None
    return hosts


class MilterService(Service):
    """A milter daemon of the SMTP role; subclasses fill in the class attributes."""

    roles = frozenset({"smtp"})
    host = "127.0.0.1"
    port: int = 0
    #: The node setting that turns it off (``False``); on by default.
    setting = ""
    #: The daemon's binary and how it is told its configuration file (``-x``, ``-c``).
    binary = ""
    conf_flag = ""
    #: The configuration file's name under ``config_root``.
    conf_name = ""
    pidfile = ""
    #: Debian's systemd unit, and what the drop-in's comment calls the daemon.
    unit = ""
    role_word = ""

    @property
    def milter(self) -> str:
        """Postfix's name of the milter socket."""
        return f"inet:{self.host}:{self.port}"

    @property
    def drop_in(self) -> str:
        return f"/etc/systemd/system/{self.unit}.service.d/ums.conf"

    def enabled(self, state: DesiredState) -> bool:
        """SMTP role, and :attr:`setting` not turned off."""
        return "smtp" in state.node.roles and state.settings.get(self.setting, True) is not False

    def applies_to_state(self, state: DesiredState) -> bool:
        return self.applies_to(state.node) and self.enabled(state)

    def unit_lines(self) -> list[str]:
        """The drop-in's lines between ``PIDFile`` and ``Restart`` (at least ExecStart)."""
        raise NotImplementedError

    def drop_in_content(self) -> bytes:
        lines = [
            f"# Managed by UMS (deploy/services/{self.name}): the {self.role_word} with "
            "UMS's configuration.",
            "[Service]",
            "Type=forking",
            f"PIDFile={self.pidfile}",
            *self.unit_lines(),
            "Restart=on-failure",
        ]
        return ("\n".join(lines) + "\n").encode()

    def validate(self, conn: Connector, staged_root: str) -> None:
        """``<binary> -n`` on a copy of the staged configuration naming staged files."""
        script = (
            _CHECK_SCRIPT.replace("@CONF@", self.conf_name)
            .replace("@CHECKER@", self.binary)
            .replace("@FLAG@", self.conf_flag)
        )
        result = conn.run(["sh", "-c", script, "sh", staged_root, self.config_root], timeout=60)
        if not result.ok:
            raise CheckFailed(self.name, (result.stdout + result.stderr).strip())

    def pidfiles(self, conn: Connector) -> list[str]:
        return [self.pidfile]

    def activate(self, conn: Connector, changed: list[ManagedFile]) -> None:
        """Under systemd, the package's unit with our drop-in (``systemd_verb``); without
        systemd (containers, the test nodes), :meth:`activate_without_systemd`."""
        if conn.run(["systemctl", "cat", self.unit]).ok:
            conn.run(["mkdir", "-p", posixpath.dirname(self.drop_in)]).check()
            wanted = self.drop_in_content()
            if conn.get_file(self.drop_in) != wanted:
                conn.put_file(self.drop_in, wanted, mode=0o644)
                conn.run(["systemctl", "daemon-reload"]).check()
            conn.run(["systemctl", "enable", self.unit])
            conn.run(["systemctl", self.systemd_verb(changed), self.unit], timeout=120).check()
        else:
            self.activate_without_systemd(conn, changed)

    def systemd_verb(self, changed: list[ManagedFile]) -> str:
        raise NotImplementedError

    def activate_without_systemd(self, conn: Connector, changed: list[ManagedFile]) -> None:
        raise NotImplementedError

    def start_daemon(self, conn: Connector, argv: list[str]) -> None:
        """Run ``argv`` (it forks and writes :attr:`pidfile`) after removing a stale pid
        file; its output goes into the error when it fails."""
        conn.run(["rm", "-f", self.pidfile]).check()
        result = conn.run(argv, timeout=60)
        if not result.ok:
            output = f"{result.stdout}{result.stderr}"
            raise CheckFailed(self.name, f"{self.binary} did not start:\n{output}")

    def answers(self, conn: Connector) -> bool:
        """Whether the milter negotiates now (activate has no DesiredState for
        :meth:`probe`; the node's Debian or RHEL Python runs the same probe)."""
        argv = [
            "sh", "-c", _ANY_PYTHON, probes.PYTHON["debian"],
            "-c", MILTER_PROBE, self.host, str(self.port), str(probes.PROBE_SECONDS),
        ]  # fmt: skip
        return conn.run(argv, timeout=probes.PROBE_SECONDS + 30).ok

    def probe(self, conn: Connector, state: DesiredState, *, strict: bool = True) -> str:
        """The milter answers an option negotiation on its port."""
        return probes.run(
            conn, state, self.name, MILTER_PROBE, self.host, str(self.port),
            str(probes.PROBE_SECONDS),
        )  # fmt: skip
