"""Courier-IMAP and Courier authlib: per-mailbox logins, IMAP/POP3 listeners, Maildirs.

* ``imap`` nodes: authdaemond + userdb, imapd (143), imapd-ssl (993), pop3d (110) and
  pop3d-ssl (995). A listener runs only when some mailbox may use it, so 143 and 110
  (denied by default) stay closed. Per mailbox (see :func:`effective_access`):

  - a protocol denied on both ports gets a service-specific password that matches
    nothing (``imappw=*`` / ``pop3pw=*``): authlib checks ``<service>pw`` before
    ``systempw``, so the LOGIN itself is refused. The account options ``disableimap`` /
    ``disablepop3`` stay as a second line; on their own they are not enough, because
    Courier 5 checks them only *after* answering ``OK LOGIN`` (the client sees a
    successful login followed by ``* BYE IMAP access disabled for this account``);
  - a protocol denied only without TLS (143/110 closed for it, 993/995 open) gets
    ``disableinsecureimap`` / ``disableinsecurepop3``: both ports share the service
    name, so only that post-login ``BYE`` can tell them apart;
  - read-only and cannot-delete mailboxes get Courier IMAP ACLs, kept locked by
    :mod:`.policy`; POP3 is denied for them, because pop3d ignores ACLs and its DELE
    would delete anyway;
  - the quota makes imapd refuse an APPEND over it. userdb carries it
    (``quota=<bytes>S``) for authlib's other users, but Courier-IMAP 5 reads it from
    the Maildir's ``maildirsize``, which :mod:`.policy` writes;
  - messages stay in Trash for the mailbox's retention period, then :mod:`.policy`'s
    cron job deletes them (Courier's own ``IMAP_EMPTYTRASH`` is off: one global period
    would override the per-mailbox one).
* ``smtp`` nodes: authdaemond + userdb only, for Postfix's SASL (see the postfix service).

The userdb holds SHA512-CRYPT hashes (``systempw``), Maildir paths under the mail store
and the maildirquota (``quota=<bytes>S``), is compiled with ``makeuserdb`` in the stage by
:meth:`validate` and its ``.dat`` files go live by rename with it. Disabled mailboxes are
left out, so they cannot log in anywhere.

Courier's paths are compiled in (``/etc/courier``, ``/run/courier``); test nodes give
each node private copies through mount namespaces.
"""

from __future__ import annotations

import posixpath

from deploy.connector.base import Connector
from deploy.services.base import (
    CheckFailed,
    DesiredState,
    MailboxData,
    ManagedFile,
    ProbeFailed,
    Service,
)
from deploy.services.postfix import safe

from .. import probes
from . import policy

ROOT = "/etc/courier"
USERDB = f"{ROOT}/userdb"
MAILDIR_LIST = f"{ROOT}/ums-maildirs"
RUN_DIR = "/run/courier"
AUTH_DIR = f"{RUN_DIR}/authdaemon"

# (script in /usr/sbin, its config files, the variable saying whether it runs, pid file)
LISTENERS: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("imapd", ("imapd",), "IMAPDSTART", f"{RUN_DIR}/imapd.pid"),
    ("imapd-ssl", ("imapd", "imapd-ssl"), "IMAPDSSLSTART", f"{RUN_DIR}/imapd-ssl.pid"),
    ("pop3d", ("pop3d",), "POP3DSTART", f"{RUN_DIR}/pop3d.pid"),
    ("pop3d-ssl", ("pop3d", "pop3d-ssl"), "POP3DSSLSTART", f"{RUN_DIR}/pop3d-ssl.pid"),
)
_GNUTLS_VERSIONS = {
    "TLSv1": "+VERS-TLS1.3:+VERS-TLS1.2:+VERS-TLS1.1:+VERS-TLS1.0",
    "TLSv1.1": "+VERS-TLS1.3:+VERS-TLS1.2:+VERS-TLS1.1",
    "TLSv1.2": "+VERS-TLS1.3:+VERS-TLS1.2",
    "TLSv1.3": "+VERS-TLS1.3",
}
# True while the process named by the pid file exists and has not exited. An exited
# process whose parent has not collected it yet (a zombie) has closed its sockets and
# files: it counts as stopped. Courier's daemons are adopted by init, which may reap
# late (on the test nodes over a second), and kill -0 alone succeeds on zombies.
_ALIVE = (
    'alive() { p=$(cat -- "$1" 2>/dev/null) && kill -0 "$p" 2>/dev/null && '
    '[ "$(sed -e "s/.*) //" -e "s/ .*//" "/proc/$p/stat" 2>/dev/null)" != Z ]; }; '
)
_RUNNING = _ALIVE + 'alive "$1"'


def _yes(flag: bool) -> str:
    return "YES" if flag else "NO"


#: A service-specific password no password can match: crypt() never yields ``*``.
LOCKED_PASSWORD = "*"  # noqa: S105 (a lock, not a credential)


def effective_access(m: MailboxData) -> dict[str, bool]:
    """What the node enforces for ``m``: its protocol access, minus POP3 when the mailbox
    is read-only or cannot delete (pop3d knows no ACLs: its DELE would still delete)."""
    access = {key: bool(m.protocols.get(key)) for key in ("imap", "imaps", "pop3", "pop3s")}
    if m.read_only or not m.can_delete:
        access["pop3"] = access["pop3s"] = False
    return access


def _access_fields(access: dict[str, bool]) -> tuple[str, str]:
    """The userdb fields that follow from a mailbox's access: (passwords, options)."""
    options = []
    locked = []
    for service in ("imap", "pop3"):
        if not (access[service] or access[f"{service}s"]):
            options.append(f"disable{service}=1")
            locked.append(f"|{service}pw={LOCKED_PASSWORD}")
        elif not access[service]:
            options.append(f"disableinsecure{service}=1")
    return "".join(locked), ("|options=" + ",".join(options)) if options else ""


def userdb_line(m: MailboxData, *, root: str, uid: int, gid: int) -> str:
    """One userdb record; every value was checked not to contain ``|``, tabs or newlines."""
    home = f"{root}/{safe.domain(m.domain)}/{safe.local_part(m.local_part)}"
    locked, options = _access_fields(effective_access(m))
    quota = f"|quota={int(m.quota_mb) * 1024 * 1024}S" if m.quota_mb else ""
    return (
        f"{safe.hosted_address(m.email)}\tuid={uid}|gid={gid}|home={home}|mail={home}/Maildir"
        f"|systempw={safe.password_hash(m.password_hash)}{locked}{quota}{options}\n"
    )


def _render_mailboxes(
    mailboxes: list[MailboxData], *, root: str, uid: int, gid: int, imap: bool
) -> tuple[str, list[dict[str, bool]], str, str]:
    """userdb, effective access, Maildir list and policy lines of checked mailboxes.

    One pass for the three files. ``mailboxes`` come from :func:`safe.hosted_mailboxes`
    (names checked once); the password hash is checked here, the only place it is used.
    The fields derived from access are computed once per distinct protocols mapping:
    ``deploy.desired`` shares one dict among the mailboxes with equal settings.
    """
    crypt = safe._CRYPT.fullmatch
    by_access: dict[tuple[int, bool, bool], tuple[dict[str, bool], str, str]] = {}
    userdb: list[str] = []
    access_list: list[dict[str, bool]] = []
    maildirs: list[str] = []
    policies: list[str] = []
    prefix = f"uid={uid}|gid={gid}|home="
    for m in mailboxes:
        password = m.password_hash
        if not isinstance(password, str) or not crypt(password):
            raise safe.UnsafeName("refusing a password hash that is not in crypt format")
        key = (id(m.protocols), m.read_only, m.can_delete)
        derived = by_access.get(key)
        if derived is None:
            access = effective_access(m)
            derived = by_access[key] = (access, *_access_fields(access))
        access, locked, options = derived
        home = f"{root}/{m.domain}/{m.local_part}"
        quota_mb = int(m.quota_mb or 0)
        quota = f"|quota={quota_mb * 1024 * 1024}S" if quota_mb else ""
        userdb.append(
            f"{m.email}\t{prefix}{home}|mail={home}/Maildir|systempw={password}"
            f"{locked}{quota}{options}\n"
        )
        if imap:
            access_list.append(access)
            maildirs.append(f"{home}/Maildir\n")
            days = max(int(m.retention_days), 0)
            policies.append(
                f"mailbox\t{days}\t{policy.access_mode(m)}\t{max(quota_mb, 0) * 1024 * 1024}"
                f"\t{home}/Maildir\n"
            )
    return "".join(userdb), access_list, "".join(maildirs), "".join(policies)


class CourierService(Service):
    name = "courier"
    check_cost = 3  # makeuserdb compiles every mailbox
    roles = frozenset({"imap", "smtp"})
    packages = {
        "debian": (
            "courier-imap",
            "courier-pop",
            "courier-authdaemon",
            "courier-authlib-userdb",
            "openssl",
        ),
        # RockyLinux has no Courier packages in its own repositories: the operator's
        # repository must provide these names. cronie runs the policy jobs (.policy).
        "rhel": (
            "courier-imap",
            "courier-authlib",
            "courier-authlib-userdb",
            "openssl",
            "cronie",
        ),
    }
    config_root = ROOT

    def render(self, state: DesiredState) -> list[ManagedFile]:
        conf = state.settings
        root = policy.mail_root(conf.get("mail_root", "/var/mail/vhosts"))
        uid, gid = int(conf.get("mail_uid", 5000)), int(conf.get("mail_gid", 5000))
        hosted = {safe.domain(d.name) for d in state.domains if d.enabled}
        mailboxes = safe.hosted_mailboxes(state.mailboxes, hosted)
        imap = "imap" in state.node.roles
        userdb, access, maildirs, policies = _render_mailboxes(
            mailboxes, root=root, uid=uid, gid=gid, imap=imap
        )
        files = [
            ManagedFile(f"{ROOT}/authdaemonrc", self.authdaemonrc(), 0o640, "root", "courier"),
            ManagedFile(USERDB, userdb.encode(), 0o600),
        ]
        if not imap:
            return files
        want = {
            "imap": any(a["imap"] for a in access),
            "imaps": any(a["imap"] or a["imaps"] for a in access),
            "pop3": any(a["pop3"] for a in access),
            "pop3s": any(a["pop3"] or a["pop3s"] for a in access),
        }
        # No tenant is listening yet: still serve IMAPS so the node answers health checks.
        if not mailboxes:
            want["imaps"] = True
        priority = "NORMAL:-VERS-ALL:" + _GNUTLS_VERSIONS.get(
            str(conf.get("tls_min_version", "TLSv1.2")), _GNUTLS_VERSIONS["TLSv1.2"]
        )
        files += [
            ManagedFile(f"{ROOT}/imapd", self.imapd(want["imap"]).encode()),
            ManagedFile(f"{ROOT}/imapd-ssl", self.imapd_ssl(want["imaps"], priority).encode()),
            ManagedFile(f"{ROOT}/pop3d", self.pop3d(want["pop3"]).encode()),
            ManagedFile(f"{ROOT}/pop3d-ssl", self.pop3d_ssl(want["pop3s"], priority).encode()),
            ManagedFile(MAILDIR_LIST, f"{uid}:{gid}\n{maildirs}".encode(), 0o600),
            ManagedFile(
                policy.POLICY_LIST,
                (policy.list_header(root=root, uid=uid, gid=gid) + policies).encode(),
                0o600,
            ),
            ManagedFile(policy.POLICY_SCRIPT, policy.POLICY_SCRIPT_TEXT.encode(), 0o700),
        ]
        return files

    # Config files are sourced by Courier's start scripts: only constants and validated
    # numbers go in, never tenant data.

    def authdaemonrc(self) -> bytes:
        return (
            "##VERSION: authdaemonrc.dist 0.71 (managed by UMS)\n"
            'authmodulelist="authuserdb"\n'
            "daemons=5\n"
            f"authdaemonvar={AUTH_DIR}\n"
            "DEBUG_LOGIN=0\n"
            'DEFAULTOPTIONS=""\n'
            'LOGGEROPTS=""\n'
        ).encode()

    def imapd(self, start: bool) -> str:
        return (
            "# Managed by UMS (deploy/services/courier).\n"
            "ADDRESS=0\nPORT=143\nMAXDAEMONS=200\nMAXPERIP=50\n"
            f"PIDFILE={RUN_DIR}/imapd.pid\n"
            'TCPDOPTS="-nodnslookup -noidentlookup"\n'
            "IMAPACCESSFILE=/etc/courier/imapaccess\n"
            'LOGGEROPTS="-name=imapd"\n'
            'IMAP_CAPABILITY="IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT '
            'THREAD=REFERENCES SORT QUOTA IDLE"\n'
            "IMAP_KEYWORDS=1\nIMAP_ACL=1\nIMAP_PROXY=0\nIMAP_PROXY_FOREIGN=0\n"
            # Off: locked Maildirs (see .policy) are root-owned on purpose.
            "IMAP_IDLE_TIMEOUT=60\nIMAP_MAILBOX_SANITY_CHECK=0\n"
            'IMAP_CAPABILITY_TLS="$IMAP_CAPABILITY AUTH=PLAIN"\n'
            "IMAP_DISABLETHREADSORT=0\nIMAP_CHECK_ALL_FOLDERS=0\nIMAP_OBSOLETE_CLIENT=0\n"
            "IMAP_UMASK=022\nIMAP_ULIMITD=131072\nIMAP_USELOCKS=1\n"
            "IMAP_SHAREDINDEXFILE=/etc/courier/shared/index\nIMAP_ENHANCEDIDLE=0\n"
            # Trash is purged per mailbox by the policy cron job, not at logout.
            "IMAP_TRASHFOLDERNAME=Trash\nIMAP_EMPTYTRASH=\n"
            "IMAP_MOVE_EXPUNGE_TO_TRASH=0\nSENDMAIL=/usr/sbin/sendmail\n"
            "HEADERFROM=X-IMAP-Sender\n"
            f"IMAPDSTART={_yes(start)}\nIMAPDSTARTTLS=YES\nMAILDIRPATH=Maildir\n"
        )

    def _tls(self, cert: str, priority: str, cache: str) -> str:
        return (
            "COURIERTLS=/usr/bin/couriertls\n"
            f'TLS_PRIORITY="{priority}"\n'
            f"TLS_CERTFILE={cert}\n"
            "TLS_DHPARAMS=/etc/courier/dhparams.pem\n"
            "TLS_TRUSTCERTS=/etc/ssl/certs/ca-certificates.crt\n"
            "TLS_VERIFYPEER=NONE\n"
            f"TLS_CACHEFILE=/var/lib/courier/{cache}\n"
            "TLS_CACHESIZE=524288\n"
        )

    def imapd_ssl(self, start: bool, priority: str) -> str:
        return (
            "# Managed by UMS (deploy/services/courier).\n"
            "SSLPORT=993\nSSLADDRESS=0\n"
            f"SSLPIDFILE={RUN_DIR}/imapd-ssl.pid\n"
            'SSLLOGGEROPTS="-name=imapd-ssl"\n'
            f"IMAPDSSLSTART={_yes(start)}\nIMAPDSTARTTLS=YES\nIMAP_TLS_REQUIRED=0\n"
            + self._tls(f"{ROOT}/imapd.pem", priority, "couriersslimapcache")
            + "MAILDIRPATH=Maildir\n"
        )

    def pop3d(self, start: bool) -> str:
        return (
            "# Managed by UMS (deploy/services/courier).\n"
            f"PIDFILE={RUN_DIR}/pop3d.pid\nMAXDAEMONS=200\nMAXPERIP=20\n"
            'POP3AUTH="LOGIN PLAIN"\nPOP3AUTH_TLS="LOGIN PLAIN"\nPOP3_PROXY=0\n'
            "PORT=110\nADDRESS=0\n"
            'TCPDOPTS="-nodnslookup -noidentlookup"\n'
            'LOGGEROPTS="-name=pop3d"\n'
            f"POP3DSTART={_yes(start)}\nMAILDIRPATH=Maildir\n"
        )

    def pop3d_ssl(self, start: bool, priority: str) -> str:
        return (
            "# Managed by UMS (deploy/services/courier).\n"
            "SSLPORT=995\nSSLADDRESS=0\n"
            f"SSLPIDFILE={RUN_DIR}/pop3d-ssl.pid\n"
            'SSLLOGGEROPTS="-name=pop3d-ssl"\n'
            f"POP3DSSLSTART={_yes(start)}\nPOP3_STARTTLS=YES\nPOP3_TLS_REQUIRED=0\n"
            + self._tls(f"{ROOT}/pop3d.pem", priority, "couriersslpop3cache")
            + "MAILDIRPATH=Maildir\n"
        )

    # ------------------------------------------------------------------ check

    def validate(self, conn: Connector, staged_root: str) -> None:
        # makeuserdb refuses malformed records and group/world-readable files; it also
        # produces the .dat files that go live with the source.
        result = conn.run(["makeuserdb", "-f", f"{staged_root}/userdb"], timeout=600)
        if not result.ok:
            raise CheckFailed(self.name, f"makeuserdb: {result.stdout}{result.stderr}".strip())
        for name in ("imapd", "imapd-ssl", "pop3d", "pop3d-ssl", "authdaemonrc"):
            path = f"{staged_root}/{name}"
            if not conn.run(["test", "-f", path]).ok:
                continue
            # The start scripts source these files: they must parse as shell.
            check = conn.run(["sh", "-n", path])
            if not check.ok:
                raise CheckFailed(self.name, f"{name}: {check.stderr.strip()}")

    def compiled_files(self, changed: list[ManagedFile]) -> list[str]:
        if any(f.path == USERDB for f in changed):
            return [f"{USERDB}.dat", f"{USERDB}shadow.dat"]
        return []

    # ------------------------------------------------------------------ activate

    def probe(self, conn: Connector, state: DesiredState, *, strict: bool = True) -> str:
        """authdaemond's socket is there (SASL and logins ask it); on IMAP nodes serving
        IMAPS, a TLS handshake, the greeting and CAPABILITY on port 993."""
        socket = f"{AUTH_DIR}/socket"
        if not conn.run(["test", "-S", socket]).ok:
            raise ProbeFailed(self.name, f"authdaemond is not listening ({socket} missing)")
        if "imap" not in state.node.roles:
            return "authdaemond listening"
        if not conn.run(["grep", "-qx", "IMAPDSSLSTART=YES", f"{ROOT}/imapd-ssl"]).ok:
            return "authdaemond listening (IMAPS off)"
        return probes.run(
            conn, state, self.name, probes.IMAPS_PROBE, "127.0.0.1", "993",
            str(probes.PROBE_SECONDS),
        )  # fmt: skip

    def activate(self, conn: Connector, changed: list[ManagedFile]) -> None:
        paths = {f.path for f in changed}
        conn.run(["mkdir", "-p", AUTH_DIR]).check()
        conn.run(["chown", "courier:courier", AUTH_DIR]).check()
        # o+x lets Postfix's smtpd (user postfix) reach the authdaemond socket for SASL
        # without adding it to the courier group; the socket is what authenticates.
        conn.run(["chmod", "0751", AUTH_DIR]).check()
        for item in changed:
            if item.path == MAILDIR_LIST:
                create_maildirs(conn, item.content.decode())
        if paths & {policy.POLICY_LIST, policy.POLICY_SCRIPT}:
            # A new script may enforce differently: then every Maildir, else only the
            # mailboxes whose policy line changed (the hourly cron job does full passes).
            apply_policy(conn, changed_only=policy.POLICY_SCRIPT not in paths)
        auth_running = conn.run(["sh", "-c", _RUNNING, "sh", f"{AUTH_DIR}/pid"]).ok
        # No restart for a new userdb: authuserdb notices the renamed userdb.dat and
        # reopens it at the next lookup (tests/converge/test_converge_speed.py proves it
        # with authtest for an added mailbox and a changed password). Restarting meant
        # waiting for the old daemons to exit, over a second, with logins refused.
        if f"{ROOT}/authdaemonrc" in paths or not auth_running:
            if auth_running:
                _stop(conn, ["authdaemond", "stop"], f"{AUTH_DIR}/pid")
            _start(conn, ["authdaemond", "start"], self.name)
        files_by_name = {f.path.rsplit("/", 1)[1]: f for f in changed}
        for script, config_names, flag, pidfile in LISTENERS:
            config = b"".join(self._live(conn, files_by_name, name) for name in config_names)
            wanted = f"{flag}=YES".encode() in config
            running = conn.run(["sh", "-c", _RUNNING, "sh", pidfile]).ok
            touched = any(f"{ROOT}/{name}" in paths for name in config_names)
            if running and (touched or not wanted):
                _stop(conn, [script, "stop"], pidfile)
                running = False
            if wanted and not running:
                if script.endswith("-ssl"):
                    ensure_pem(conn, f"{ROOT}/{script.split('-')[0]}.pem")
                _start(conn, [script, "start"], self.name)

    unit_names = (
        "courier-authdaemon", "courier-imap", "courier-imap-ssl", "courier-pop",
        "courier-pop-ssl", "imapd", "imapd-ssl", "pop3d", "pop3d-ssl",
    )  # fmt: skip

    def pidfiles(self, conn: Connector) -> list[str]:
        return [*(pidfile for _s, _c, _f, pidfile in LISTENERS), f"{AUTH_DIR}/pid"]

    def stop(self, conn: Connector) -> list[int]:
        """Each running listener with its own script (it stops couriertcpd and its
        logger), then authdaemond; whatever still runs then gets a signal."""
        from deploy.services.daemon import running_pids, stop_pidfiles

        pids = running_pids(conn, self.pidfiles(conn))
        for script, _config, _flag, pidfile in LISTENERS:
            if conn.run(["sh", "-c", _RUNNING, "sh", pidfile]).ok:
                _stop(conn, [script, "stop"], pidfile)
        if conn.run(["sh", "-c", _RUNNING, "sh", f"{AUTH_DIR}/pid"]).ok:
            _stop(conn, ["authdaemond", "stop"], f"{AUTH_DIR}/pid")
        stop_pidfiles(conn, self.pidfiles(conn))
        return pids

    def _live(self, conn: Connector, changed: dict[str, ManagedFile], name: str) -> bytes:
        if name in changed:
            return changed[name].content
        return conn.get_file(f"{ROOT}/{name}") or b""


def apply_policy(conn: Connector, *, changed_only: bool = False) -> None:
    """Enforce locks and quotas now and make sure cron keeps doing it (and purges Trash).

    ``changed_only``: only the mailboxes whose line differs from the script's last
    complete run (see :mod:`.policy`); a full pass over 100,000 Maildirs takes minutes.
    """
    argv = ["sh", policy.POLICY_SCRIPT, "enforce"]
    if changed_only:
        argv.append("--changed")
    result = conn.run(argv, timeout=3600)
    if not result.ok:
        raise CheckFailed("courier", f"enforcing mailbox policy: {result.stderr.strip()}")
    cron = policy.CRON_ENTRY.encode()
    if conn.get_file(policy.CRON_FILE) != cron:
        conn.run(["mkdir", "-p", posixpath.dirname(policy.CRON_FILE)]).check()
        # cron ignores files that are group/world writable or not owned by root.
        conn.put_file(policy.CRON_FILE, cron, mode=0o644, owner="root", group="root")


# Waits (up to 10 s) until the daemon named by the pid file has exited: courierlogger
# -stop only signals it, and a start while the old one lives is silently a no-op.
_WAIT_STOPPED = _ALIVE + (
    'i=0; while alive "$1"; do i=$((i+1)); [ $i -gt 200 ] && exit 1; sleep 0.05; done; exit 0'
)


def _stop(conn: Connector, argv: list[str], pidfile: str) -> None:
    conn.run(argv, timeout=60)
    conn.run(["sh", "-c", _WAIT_STOPPED, "sh", pidfile], timeout=60)


def _start(conn: Connector, argv: list[str], service: str) -> None:
    result = conn.run(argv, timeout=60)
    if not result.ok:
        raise CheckFailed(service, f"{' '.join(argv)}: {result.stdout}{result.stderr}")


def ensure_pem(conn: Connector, pem: str) -> None:
    """Courier wants key and certificate in one file; self-signed until replaced."""
    if conn.run(["test", "-s", pem]).ok:
        return
    conn.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "825",
            "-subj",
            "/CN=localhost",
            "-keyout",
            pem,
            "-out",
            pem,
        ],
        timeout=120,
    ).check()
    conn.run(["chmod", "0640", pem]).check()
    conn.run(["chown", "root:courier", pem]).check()


# Creates each listed Maildir (cur/new/tmp) that does not exist yet, owned by the mail
# user. Paths arrive on stdin, one per line, and are only ever used as quoted arguments.
_MAILDIR_SCRIPT = r"""
owner=$1
while IFS= read -r dir; do
  [ -n "$dir" ] || continue
  [ -d "$dir/cur" ] && continue
  mkdir -p -- "$dir/cur" "$dir/new" "$dir/tmp" || exit 1
  chown -- "$owner" "$dir" "$dir/cur" "$dir/new" "$dir/tmp" "${dir%/Maildir}" || exit 1
  chmod 0700 -- "$dir" "$dir/cur" "$dir/new" "$dir/tmp" || exit 1
done
"""


def create_maildirs(conn: Connector, listing: str) -> None:
    lines = listing.splitlines()
    if not lines:
        return
    owner, body = lines[0], "\n".join(lines[1:]) + "\n"
    uid, _sep, gid = owner.partition(":")
    if not (uid.isdigit() and gid.isdigit()):
        raise CheckFailed("courier", f"bad mail store owner {owner!r}")
    result = conn.run(["sh", "-c", _MAILDIR_SCRIPT, "sh", owner], input=body.encode(), timeout=3600)
    if not result.ok:
        raise CheckFailed("courier", f"creating Maildirs failed: {result.stderr.strip()}")
    # Domain directories belong to the mail user too, so Postfix virtual(8) can add boxes.
    domains = sorted({line.rsplit("/", 3)[0] for line in lines[1:] if line.count("/") >= 3})
    if domains:
        conn.run(["chown", "--", owner, *domains]).check()


SERVICE = CourierService()
