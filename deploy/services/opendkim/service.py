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
What it shares with OpenDMARC (checker, drop-in, probe) is in :mod:`..milter`.
"""

from __future__ import annotations

import re

from cryptography.hazmat.primitives import serialization

from deploy.connector.base import Connector
from deploy.services.base import DesiredState, ManagedFile

from .. import mail_auth, milter
from ..milter import MILTER_PROBE, internal_hosts
from ..postfix import safe

__all__ = [
    "MILTER", "MILTER_PROBE", "OpenDkimService", "internal_hosts", "milter_entry",
    "signing_enabled",
]  # fmt: skip

ROOT = "/etc/ums-opendkim"
HOST, PORT = "127.0.0.1", 8891
#: Postfix's name of the milter socket.
MILTER = f"inet:{HOST}:{PORT}"
KEY_DIR = f"{ROOT}/keys"
RUN_DIR = "/run/ums-opendkim"
PIDFILE = f"{RUN_DIR}/opendkim.pid"
USER = "opendkim"
UNIT = "opendkim"
#: RFC 6376 selector: dot-separated labels (we make ``s202612`` or ``s2026120710``).
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_SELECTOR = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")


def signing_enabled(state: DesiredState) -> bool:
    """Whether this node runs the signer: SMTP role, and ``dkim_signing`` not turned off."""
    return OpenDkimService().enabled(state)


def milter_entry() -> str:
    """The Postfix milter list element: a signer that is down never defers mail."""
    return milter.entry(MILTER)


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


class OpenDkimService(milter.MilterService):
    """The signer's configuration, keys and daemon."""

    name = "opendkim"
    packages = {"debian": ("opendkim", "opendkim-tools"), "rhel": ("opendkim",)}
    config_root = ROOT
    host, port = HOST, PORT
    setting = "dkim_signing"
    binary, conf_flag, conf_name = "opendkim", "-x", "opendkim.conf"
    pidfile = PIDFILE
    unit, role_word = UNIT, "signer"

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

    def unit_lines(self) -> list[str]:
        # Replaces the package's command line (its -p/-P would override our Socket and
        # PidFile).
        return [
            "RuntimeDirectory=",
            f"RuntimeDirectory={RUN_DIR.rsplit('/', 1)[1]}",
            "ExecStart=",
            f"ExecStart=/usr/sbin/opendkim -x {ROOT}/opendkim.conf",
            "ExecReload=",
            "ExecReload=/bin/kill -USR1 $MAINPID",
        ]

    def activate(self, conn: Connector, changed: list[ManagedFile]) -> None:
        """Reload (SIGUSR1 re-reads the configuration and tables), or start the daemon;
        then remove key files the new KeyTable no longer names."""
        super().activate(conn, changed)
        table = next((f for f in changed if f.path == f"{ROOT}/KeyTable"), None)
        # Only once the signer answers with the new table: if it does not, converge's
        # probe fails and puts the previous table back, which needs its key files.
        if table is not None and self.answers(conn):
            self._remove_stale_keys(conn, table)

    def systemd_verb(self, changed: list[ManagedFile]) -> str:
        return "reload-or-restart"

    def activate_without_systemd(self, conn: Connector, changed: list[ManagedFile]) -> None:
        """Our own pid file tells whether it runs: signal it, else start it."""
        pid = (conn.get_file(PIDFILE) or b"").strip().decode(errors="replace")
        if pid.isdigit() and conn.run(["kill", "-0", pid]).ok:
            conn.run(["kill", "-USR1", pid]).check()
        else:
            self._start(conn)

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
        self.start_daemon(conn, ["opendkim", "-x", f"{ROOT}/opendkim.conf"])
