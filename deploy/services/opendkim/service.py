"""OpenDKIM on SMTP nodes: DKIM-signs outgoing mail of every domain with a signing key,
verifies incoming signatures and adds ``Authentication-Results``.

Why OpenDKIM (Debian ``opendkim``) rather than signing in the content filter
(``postfix/filter/ums_filter.py``, a Python milter Postfix spawns per connection as
``nobody``): the private keys then live in a file only the ``opendkim`` user may read,
not one every ``nobody`` process could; signing still works on a node that runs without
the content filter (``content_filter: false``); and the nodes need no Python DKIM library.

Files (all under :data:`ROOT`, rendered from ``DesiredState``):

* ``opendkim.conf``: mode ``sv`` (sign mail from authenticated or internal clients,
  verify the rest), milter on ``inet:8891@127.0.0.1``;
* ``KeyTable`` (0600, owner ``opendkim``): one line per signing domain, the private key
  inline (base64 DER), so a domain that loses its key leaves no key file behind;
* ``SigningTable``: the From domain -> its key; ``InternalHosts``: loopback and the
  ``relay_networks`` setting (hosts whose mail is signed without SMTP AUTH).

Which key signs (``DomainData.dkim_selector``) is decided by ``deploy.desired``: after a
rotation the previous key keeps signing until a DNS check saw the new TXT record.

Postfix reaches it through ``smtpd_milters``/``non_smtpd_milters`` with
``default_action=accept`` (``deploy/services/postfix/signing.py``): a dead signer sends
mail unsigned rather than deferring it. The probe after every reload shows a dead one.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re

from cryptography.hazmat.primitives import serialization

from deploy.connector.base import Connector
from deploy.services.base import CheckFailed, DesiredState, ManagedFile, Service

from .. import mail_auth, probes
from ..postfix import safe

__all__ = ["MILTER", "OpenDkimService", "milter_entry", "signing_enabled"]

ROOT = "/etc/ums-opendkim"
HOST, PORT = "127.0.0.1", 8891
#: Postfix's name of the milter socket.
MILTER = f"inet:{HOST}:{PORT}"
KEY_DIR = f"{ROOT}/keys"
RUN_DIR = "/run/ums-opendkim"
PIDFILE = f"{RUN_DIR}/opendkim.pid"
USER = "opendkim"
#: RFC 6376 selector: dot-separated labels (we make ``s202612`` or ``s2026120710``).
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_SELECTOR = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")


def signing_enabled(state: DesiredState) -> bool:
    """Whether this node runs the signer: SMTP role, and ``dkim_signing`` not turned off."""
    return "smtp" in state.node.roles and state.settings.get("dkim_signing", True) is not False


def milter_entry() -> str:
    """The Postfix milter list element: a signer that is down never defers mail."""
    return f"{{ {MILTER}, default_action=accept }}"


def selector(value: object) -> str:
    """A selector as it goes into the KeyTable and DNS; refused unless plain."""
    if not isinstance(value, str) or len(value) > 63 or not _SELECTOR.match(value):
        raise safe.UnsafeName(f"refusing DKIM selector {value!r}")
    return value


def key_pem(pem: str) -> bytes:
    """The private key as a PEM file; refused unless it parses as a private key."""
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise safe.UnsafeName(f"refusing DKIM private key: {exc}") from None
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def key_path(domain: str, sel: str) -> str:
    return f"{KEY_DIR}/{domain}.{sel}.key"


def signing_keys(state: DesiredState) -> list[tuple[str, str, bytes]]:
    """(domain, selector, key PEM) for every enabled domain with a signing key."""
    keys = []
    for domain in sorted(state.domains, key=lambda d: d.name):
        if not domain.enabled or not domain.dkim_selector or not domain.dkim_private_key:
            continue
        keys.append(
            (safe.domain(domain.name), selector(domain.dkim_selector),
             key_pem(domain.dkim_private_key))
        )  # fmt: skip
    return keys


def internal_hosts(state: DesiredState) -> list[str]:
    hosts = ["127.0.0.1", "::1"]
    for net in state.settings.get("relay_networks", []) or []:
        try:
            hosts.append(str(ipaddress.ip_network(str(net), strict=True)))
        except ValueError as exc:
            raise safe.UnsafeName(f"refusing relay network {net!r}: {exc}") from None
    return hosts


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


class OpenDkimService(Service):
    """The signer's configuration, keys and daemon."""

    name = "opendkim"
    roles = frozenset({"smtp"})
    packages = {"debian": ("opendkim", "opendkim-tools"), "rhel": ("opendkim",)}
    config_root = ROOT

    def applies_to_state(self, state: DesiredState) -> bool:
        return self.applies_to(state.node) and signing_enabled(state)

    def render(self, state: DesiredState) -> list[ManagedFile]:
        keys = signing_keys(state)
        hostname = safe.domain(state.node.hostname.lower())
        conf = [
            "# Managed by UMS (deploy/services/opendkim): replaced on every converge.",
            "Syslog yes",
            "Mode sv",
            f"Socket inet:{PORT}@{HOST}",
            f"PidFile {PIDFILE}",
            f"UserID {USER}:{USER}",
            "UMask 007",
            "Canonicalization relaxed/simple",
            "SignatureAlgorithm rsa-sha256",
            # A From header added after signing would otherwise pass as signed.
            "OversignHeaders From",
            f"AuthservID {hostname}",
            # Results claiming to come from this node that arrive from outside are
            # deleted (DKIM, and SPF/DMARC ones too), so OpenDMARC and the content
            # filter after it read only this node's own verdicts.
            f"RemoveARFrom {hostname}",
            "RemoveARAll yes",
            # Every inbound message gets a DKIM result, "none" when unsigned.
            "AlwaysAddARHeader yes",
            # A signer that cannot sign (an unreadable key) sends the message unsigned,
            # as Postfix does when the signer is down: never a deferral for DKIM alone.
            "On-InternalError accept",
            f"KeyTable {ROOT}/KeyTable",
            f"SigningTable {ROOT}/SigningTable",
            f"InternalHosts {ROOT}/InternalHosts",
        ]
        servers = mail_auth.resolvers(state)
        if servers:
            # Key lookups through the resolver of the mail checks (not /etc/resolv.conf).
            conf.append(f"Nameservers {','.join(servers)}")
        # Key files, not keys inline: OpenDKIM reads table lines into a 1 kB buffer, and
        # a 2048-bit key in base64 is longer (the signer then fails every message).
        key_table = "".join(
            f"{sel}._domainkey.{dom} {dom}:{sel}:{key_path(dom, sel)}\n" for dom, sel, _k in keys
        )
        signing_table = "".join(f"{dom} {sel}._domainkey.{dom}\n" for dom, sel, _k in keys)
        header = "# Managed by UMS: regenerated on every converge.\n"
        hosts = "\n".join(internal_hosts(state)) + "\n"
        return [
            ManagedFile(f"{ROOT}/opendkim.conf", ("\n".join(conf) + "\n").encode()),
            ManagedFile(f"{ROOT}/KeyTable", (header + key_table).encode()),
            ManagedFile(f"{ROOT}/SigningTable", (header + signing_table).encode()),
            ManagedFile(f"{ROOT}/InternalHosts", (header + hosts).encode()),
            *(
                ManagedFile(key_path(dom, sel), pem, mode=0o600, owner=USER, group=USER)
                for dom, sel, pem in keys
            ),
        ]

    def validate(self, conn: Connector, staged_root: str) -> None:
        """``opendkim -n`` (parse the configuration and open every table) on the stage."""
        result = conn.run(["sh", "-c", _CHECK_SCRIPT, "sh", staged_root, ROOT], timeout=60)
        if not result.ok:
            raise CheckFailed(self.name, (result.stdout + result.stderr).strip())

    def pidfiles(self, conn: Connector) -> list[str]:
        return [PIDFILE]

    def activate(self, conn: Connector, changed: list[ManagedFile]) -> None:
        """Reload (SIGUSR1 re-reads the configuration and tables), or start the daemon.

        Under systemd, Debian's ``opendkim`` unit runs it with our configuration (a
        drop-in), so it restarts on failure and comes back after a reboot. Without
        systemd (containers, the test nodes) our own pid file tells whether it runs.
        """
        pid = (conn.get_file(PIDFILE) or b"").strip().decode(errors="replace")
        if conn.run(["systemctl", "cat", UNIT]).ok:
            conn.run(["mkdir", "-p", posixpath.dirname(DROP_IN)]).check()
            if conn.get_file(DROP_IN) != _DROP_IN:
                conn.put_file(DROP_IN, _DROP_IN, mode=0o644)
                conn.run(["systemctl", "daemon-reload"]).check()
            conn.run(["systemctl", "enable", UNIT])
            conn.run(["systemctl", "reload-or-restart", UNIT], timeout=120).check()
        elif pid.isdigit() and conn.run(["kill", "-0", pid]).ok:
            conn.run(["kill", "-USR1", pid]).check()
        else:
            self._start(conn)
        table = next((f for f in changed if f.path == f"{ROOT}/KeyTable"), None)
        # Only once the signer answers with the new table: if it does not, converge's
        # probe fails and puts the previous table back, which needs its key files.
        if table is not None and conn.run(_PROBE_ARGV, timeout=probes.PROBE_SECONDS + 30).ok:
            self._remove_stale_keys(conn, table)

    def _remove_stale_keys(self, conn: Connector, table: ManagedFile) -> None:
        """Key files the new KeyTable no longer names (a removed key or domain): the
        private key must not stay on the node. After the reload, so the signer never
        meets a table naming a file that is already gone."""
        wanted = {
            line.rsplit(":", 1)[1]
            for line in table.content.decode().splitlines()
            if line and not line.startswith("#")
        }
        listing = conn.run(["find", KEY_DIR, "-maxdepth", "1", "-type", "f", "-name", "*.key"])
        stale = [
            p for p in listing.stdout.split() if p.startswith(KEY_DIR + "/") and p not in wanted
        ]
        if stale:
            conn.run(["rm", "-f", "--", *stale]).check()

    def _start(self, conn: Connector) -> None:
        conn.run(["mkdir", "-p", RUN_DIR]).check()
        conn.run(["chown", f"{USER}:{USER}", RUN_DIR]).check()
        conn.run(["rm", "-f", PIDFILE]).check()
        result = conn.run(["opendkim", "-x", f"{ROOT}/opendkim.conf"], timeout=60)
        if not result.ok:
            raise CheckFailed(self.name, f"opendkim did not start:\n{result.stdout}{result.stderr}")

    def probe(self, conn: Connector, state: DesiredState, *, strict: bool = True) -> str:
        """The milter answers an option negotiation on its port."""
        return probes.run(
            conn, state, self.name, MILTER_PROBE, HOST, str(PORT), str(probes.PROBE_SECONDS)
        )


# The milter probe with whichever Python the node has (activate knows no DesiredState).
_PROBE_ARGV = [
    "sh", "-c",
    'for p in "$0" /usr/libexec/platform-python; do [ -x "$p" ] && exec "$p" "$@"; done; exit 127',
    probes.PYTHON["debian"], "-c", MILTER_PROBE, HOST, str(PORT), str(probes.PROBE_SECONDS),
]  # fmt: skip

UNIT = "opendkim"
DROP_IN = f"/etc/systemd/system/{UNIT}.service.d/ums.conf"
# Replaces the package's command line (its -p/-P would override our Socket and PidFile).
_DROP_IN = f"""# Managed by UMS (deploy/services/opendkim): the signer with UMS's configuration.
[Service]
Type=forking
PIDFile={PIDFILE}
RuntimeDirectory=
RuntimeDirectory={posixpath.basename(RUN_DIR)}
ExecStart=
ExecStart=/usr/sbin/opendkim -x {ROOT}/opendkim.conf
ExecReload=
ExecReload=/bin/kill -USR1 $MAINPID
Restart=on-failure
""".encode()

# argv: stage, live root. The staged configuration names live table paths; a copy of it
# pointing at the staged tables is what opendkim -n checks (it opens every table).
_CHECK_SCRIPT = r"""
stage=$1; root=$2
sed "s#${root}/#${stage}/#g" "$stage/opendkim.conf" > "$stage/.check.conf" || exit 1
opendkim -n -x "$stage/.check.conf" 2>&1
rc=$?
rm -f "$stage/.check.conf"
exit $rc
"""
