"""postsrsd on SMTP nodes when ``srs_domain`` is set.

A message an outside sender sends to a UMS mailbox that forwards it to another provider
leaves our SMTP node with the original envelope sender; the receiver's SPF check of that
sender's domain then fails (our node is not among its senders). With SRS the envelope
sender becomes ``SRS0=hash=tt=orig-domain=user@<srs_domain>`` (a domain whose SPF lists
our nodes), and a bounce to that address is turned back into the original sender
(reverse lookup), the hash proving we made it.

Postfix asks postsrsd through two TCP lookup tables (``sender_canonical_maps`` forward,
``recipient_canonical_maps`` reverse). Senders at our own domains (hosted and alias
domains, and the SRS domain) are excluded (``-X``): our users' own mail is never
rewritten, only foreign senders', as every Postfix + postsrsd setup does (the Return-Path
of mail an outside sender sends to a local mailbox is rewritten too; replies go to the
From header and still reach the sender). The secret is the same on every SMTP node
(derived from the controller's SECRET_KEY by deploy.desired), so a bounce may come back
through any of them. The SRS domain must be one of the hosted domains (so the MX accepts
mail for it) and publish SPF for the SMTP nodes.
"""

from __future__ import annotations

import posixpath

from deploy.connector.base import Connector
from deploy.services import probes
from deploy.services.base import CheckFailed, DesiredState, ManagedFile, Service
from deploy.services.daemon import running_pids, stop_pidfiles
from deploy.services.postfix import safe

ROOT = "/etc/ums-srs"
CONF = f"{ROOT}/srs.conf"
SECRET = f"{ROOT}/secret"
RUN_DIR = "/run/ums-srs"
PIDFILE = f"{RUN_DIR}/postsrsd.pid"
HOST = "127.0.0.1"
FORWARD_PORT = 10001
REVERSE_PORT = 10002

# Asks the forward table for a foreign address: "200 SRS0=..." when postsrsd answers.
_PROBE = r"""
import socket, sys, time
host, port, domain, wait = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
deadline = time.monotonic() + wait
while True:
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"get probe@ums-srs-probe.invalid\n")
            reply = s.recv(1024).decode(errors="replace").strip()
        if reply.startswith("200 SRS0") and reply.endswith("@" + domain):
            print(reply)
            sys.exit(0)
        print("unexpected answer: " + reply)
        sys.exit(1)
    except OSError as exc:
        if time.monotonic() > deadline:
            print("postsrsd does not answer: %s" % exc)
            sys.exit(1)
        time.sleep(0.2)
"""


_QUIET = (
    'out=$(mktemp) || exit 1; "$@" </dev/null >"$out" 2>&1; rc=$?; '
    'cat -- "$out"; rm -f -- "$out"; exit $rc'
)


def enabled(state: DesiredState) -> bool:
    return "smtp" in state.node.roles and bool(state.settings.get("srs_domain"))


def _excluded(state: DesiredState) -> list[str]:
    names = {safe.domain(str(state.settings["srs_domain"]))}
    for d in state.domains:
        names.add(safe.domain(d.name))
        names.update(safe.domain(a) for a in d.aliases)
    return sorted(names)


def postfix_params(state: DesiredState) -> list[tuple[str, str]]:
    """main.cf parameters on an SMTP node with SRS (none otherwise)."""
    if not enabled(state):
        return []
    return [
        ("sender_canonical_maps", f"tcp:{HOST}:{FORWARD_PORT}"),
        ("sender_canonical_classes", "envelope_sender"),
        ("recipient_canonical_maps", f"tcp:{HOST}:{REVERSE_PORT}"),
        ("recipient_canonical_classes", "envelope_recipient, header_recipient"),
    ]


class SrsService(Service):
    name = "srs"
    roles = frozenset({"smtp"})
    packages = {"debian": ("postsrsd",), "rhel": ("postsrsd",)}
    config_root = ROOT
    unit_names = ("postsrsd",)

    def applies_to_state(self, state: DesiredState) -> bool:
        return enabled(state)

    def render(self, state: DesiredState) -> list[ManagedFile]:
        domain = safe.domain(str(state.settings["srs_domain"]))
        secret = str(state.settings.get("srs_secret") or "")
        if len(secret) < 32 or not secret.isalnum():
            raise ValueError("srs_secret must be at least 32 letters or digits")
        conf = "".join(
            [
                "# Managed by UMS: local changes are overwritten.\n",
                f"domain {domain}\n",
                *(f"exclude {name}\n" for name in _excluded(state)),
            ]
        )
        return [
            ManagedFile(CONF, conf.encode()),
            ManagedFile(SECRET, (secret + "\n").encode(), mode=0o600),
        ]

    def validate(self, conn: Connector, staged_root: str) -> None:
        """postsrsd has no check mode: the staged file must name a domain and a secret."""
        conf = conn.get_file(posixpath.join(staged_root, "srs.conf")) or b""
        secret = conn.get_file(posixpath.join(staged_root, "secret")) or b""
        if b"\ndomain " not in b"\n" + conf or not secret.strip():
            raise CheckFailed(self.name, "srs.conf names no domain or the secret is empty")

    def pidfiles(self, conn: Connector) -> list[str]:
        return [PIDFILE]

    def activate(self, conn: Connector, changed: list[ManagedFile]) -> None:
        """postsrsd reads its options at start: restart it with the live files."""
        if changed or not running_pids(conn, [PIDFILE]):
            stop_pidfiles(conn, [PIDFILE])
            self._start(conn)

    def _start(self, conn: Connector) -> None:
        text = (conn.get_file(CONF) or b"").decode(errors="replace")
        domain, excluded = "", []
        for line in text.splitlines():
            key, _sep, value = line.partition(" ")
            if key == "domain":
                domain = safe.domain(value.strip())
            elif key == "exclude":
                excluded.append(safe.domain(value.strip()))
        if not domain:
            raise CheckFailed(self.name, f"{CONF} names no domain")
        conn.run(["mkdir", "-p", RUN_DIR]).check()
        argv = [
            "postsrsd", "-D", f"-s{SECRET}", f"-d{domain}", f"-l{HOST}",
            f"-f{FORWARD_PORT}", f"-r{REVERSE_PORT}", f"-p{PIDFILE}", "-unobody",
            *(f"-X{name}" for name in excluded),
        ]  # fmt: skip
        # The daemon would keep the SSH session's output open: its messages go to a file.
        result = conn.run(["sh", "-c", _QUIET, "sh", *argv], timeout=60)
        if not result.ok:
            raise CheckFailed(self.name, f"postsrsd did not start:\n{result.stdout}{result.stderr}")

    def probe(self, conn: Connector, state: DesiredState, *, strict: bool = True) -> str:
        domain = safe.domain(str(state.settings["srs_domain"]))
        return probes.run(
            conn, state, self.name, _PROBE, HOST, str(FORWARD_PORT), domain,
            str(probes.PROBE_SECONDS),
        )  # fmt: skip


SERVICE = SrsService()
