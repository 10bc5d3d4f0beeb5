"""Dovecot's LDA with Pigeonhole as the delivery agent of IMAP nodes.

Postfix on an IMAP node hands every message for a hosted mailbox to ``dovecot-lda``
(a ``pipe(8)`` transport, see ``deploy/services/postfix/delivery.py``), which runs the
mailbox's Sieve scripts and writes into the Maildir Courier-IMAP serves:

* ``/etc/ums-lda/dovecot.conf``: a private configuration (the packaged ``/etc/dovecot``
  is left alone). Dovecot runs no IMAP/POP3/LMTP listener; its master process runs only
  for the auth service whose userdb answers the LDA's lookups.
* ``/etc/ums-lda/users``: the userdb (passwd-file), rendered from the database: home =
  the mailbox's directory, Maildir++ quota (``maildirsize``, the file Courier's
  maildirquota keeps, so both enforce the same limit), and the mailbox's scripts.
* ``/etc/ums-lda/sieve/<domain>/<local>/user.sieve``: the mailbox's own Sieve script,
  byte for byte as the portal/API validated it (a file, never a command line);
  ``vacation.sieve``: its auto-responder, rendered by :mod:`.vacation`, run first
  (``sieve_before``) so the user's ``stop`` or ``discard`` cannot silence it.
  Both are compiled with ``sievec`` in the stage: a script that does not compile fails
  the converge and leaves every live file as it was. Once live they are compiled again
  in place (a binary records its script's path), so the LDA, which may not write there,
  finds an up-to-date binary; scripts no longer named by the userdb are removed.

* ``/etc/ums-lda/deliver``: what Postfix's pipe(8) runs. It runs dovecot-lda, keeps its
  exit status, then copies the subscriptions the LDA made for folders a filter created
  (``lda_mailbox_autosubscribe``, Dovecot's own ``subscriptions`` file) into Courier's
  ``courierimapsubscribed``, so those folders show in the user's mail client.

Settings: ``mail_root``, ``mail_uid``, ``mail_gid`` (shared with Postfix and Courier),
``mail_user`` (the account owning the mail store, default ``vmail``; Postfix's pipe(8)
needs a name, so converge creates it with ``mail_uid``/``mail_gid`` when missing) and
``lda_log_file`` (default: syslog).
"""

from __future__ import annotations

import posixpath
import re
import string
from collections import defaultdict
from importlib import resources
from typing import Any

from deploy.connector.base import Connector
from deploy.services.base import CheckFailed, DesiredState, MailboxData, ManagedFile, Service
from deploy.services.postfix import safe

from . import vacation

ROOT = "/etc/ums-lda"
CONF = f"{ROOT}/dovecot.conf"
USERS = f"{ROOT}/users"
SIEVE_DIR = f"{ROOT}/sieve"
RUN_DIR = "/run/ums-lda"
STATE_DIR = "/var/lib/ums-lda"
PIDFILE = f"{RUN_DIR}/master.pid"
#: What activate needs besides the files (it is not given the desired state).
OWNER = f"{ROOT}/mail-owner"
#: What Postfix's pipe(8) runs: dovecot-lda, then Courier's subscriptions kept in step.
DELIVER = f"{ROOT}/deliver"
USER_SCRIPT = "user.sieve"
VACATION_SCRIPT = "vacation.sieve"
#: The pipe(8) transport name in master.cf.
TRANSPORT = "dovecot"
LDA_BINARY = {
    "debian": "/usr/lib/dovecot/dovecot-lda",
    "rhel": "/usr/libexec/dovecot/dovecot-lda",
}
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# An absolute path of safe characters: it is written into dovecot.conf and the userdb
# unquoted, where ":" or a space would start another field.
_PATH = re.compile(r"^/[A-Za-z0-9._/-]{1,250}$")
# A zombie (exited, not yet reaped by its parent) is not running: kill -0 alone says it is.
_RUNNING = (
    'p=$(cat -- "$1" 2>/dev/null) && kill -0 "$p" 2>/dev/null && '
    '[ "$(sed -e "s/.*) //" -e "s/ .*//" "/proc/$p/stat" 2>/dev/null)" != Z ]'
)
# Starts the master with configuration $1. The daemon would keep the SSH session's
# stdout open (and the command from ever returning): its start-up messages go to a
# temporary file instead, printed once the foreground part has exited.
_START = r"""
out=$(mktemp) || exit 1
dovecot -c "$1" </dev/null >"$out" 2>&1
rc=$?
cat -- "$out"
rm -f -- "$out"
exit $rc
"""


def mail_user(settings: dict[str, Any]) -> str:
    """The account Postfix runs the LDA as; it owns the mail store (``mail_uid``)."""
    name = str(settings.get("mail_user") or "vmail")
    if not _USER_NAME.match(name) or name in ("root", "postfix"):
        raise safe.UnsafeName(f"refusing mail user {name!r}")
    return name


def mail_root(settings: dict[str, Any]) -> str:
    """The mail store's root (``mail_root``), refused unless a plain absolute path."""
    root = str(settings.get("mail_root", "/var/mail/vhosts")).rstrip("/")
    if not _PATH.match(root) or "/." in root:
        raise safe.UnsafeName(f"refusing mail root {root!r}")
    return root


def postfix_glue(state: DesiredState) -> dict[str, str]:
    """What Postfix's master.cf needs to pipe mail into the LDA on ``state.node``."""
    return {
        "transport": TRANSPORT,
        "user": mail_user(state.settings),
        "deliver": DELIVER,
        "root": mail_root(state.settings),
        "lda": LDA_BINARY.get(state.node.os_family, LDA_BINARY["rhel"]),
        "config": CONF,
    }


def mailbox_dir(domain: str, local_part: str) -> str:
    """Where a mailbox's scripts live (validated names: no path tricks possible)."""
    return f"{SIEVE_DIR}/{safe.domain(domain)}/{safe.local_part(local_part)}"


def vacation_addresses(state: DesiredState) -> dict[str, list[str]]:
    """Per mailbox, the addresses its auto-responder answers for.

    Its own address, every alias that delivers to it, and each of those in the domain's
    alias domains (mail to ``alice@alias.example`` reaches the same mailbox).
    """
    alias_domains = {d.name: list(d.aliases) for d in state.domains if d.enabled}
    own: dict[str, list[str]] = defaultdict(list)
    for m in state.mailboxes:
        own[m.email].append(m.email)
    for a in state.aliases:
        if not a.enabled:
            continue
        for target in a.targets:
            if target in own:
                own[target].append(safe.hosted_address(a.email))
    result: dict[str, list[str]] = {}
    for email, addresses in own.items():
        expanded: list[str] = []
        for address in addresses:
            local, _sep, domain = address.partition("@")
            expanded.append(address)
            for alias in alias_domains.get(domain, ()):
                expanded.append(f"{local}@{safe.domain(alias)}")
        result[email] = list(dict.fromkeys(expanded))
    return result


def userdb_line(m: MailboxData, fields: list[str], *, root: str, uid: int, gid: int) -> str:
    """One passwd-file record: ``user:password:uid:gid:gecos:home:shell:extra fields``.

    No password (no one logs in here); every value is a validated name, number or path
    of ours, so no ``:``, space or newline can shift a field.
    """
    home = f"{root}/{safe.domain(m.domain)}/{safe.local_part(m.local_part)}"
    extra = list(fields)
    if m.quota_mb:
        # Bytes, as Courier's userdb has them: both write "<bytes>S" into maildirsize.
        extra.insert(0, f"userdb_quota_rule=*:storage={int(m.quota_mb) * 1024 * 1024}B")
    return f"{safe.hosted_address(m.email)}::{uid}:{gid}::{home}::{' '.join(extra)}\n"


class LdaService(Service):
    name = "lda"
    check_cost = 1  # sievec compiles every script
    roles = frozenset({"imap"})
    packages = {
        "debian": ("dovecot-core", "dovecot-sieve"),
        "rhel": ("dovecot", "dovecot-pigeonhole"),
    }
    config_root = ROOT

    # ------------------------------------------------------------------ render

    def render(self, state: DesiredState) -> list[ManagedFile]:
        conf = state.settings
        root = mail_root(conf)
        uid, gid = int(conf.get("mail_uid", 5000)), int(conf.get("mail_gid", 5000))
        hosted = {safe.domain(d.name) for d in state.domains if d.enabled}
        mailboxes = [m for m in state.mailboxes if m.enabled and m.domain in hosted]
        addresses = vacation_addresses(state)
        scripts: list[ManagedFile] = []
        users: list[str] = []
        for m in mailboxes:
            base = mailbox_dir(m.domain, m.local_part)
            fields: list[str] = []
            if m.autoresponder:
                path = f"{base}/{VACATION_SCRIPT}"
                text = vacation.render(m.autoresponder, addresses.get(m.email, [m.email]))
                scripts.append(ManagedFile(path, text.encode()))
                fields.append(f"userdb_sieve_before={path}")
            if m.sieve_script and m.sieve_script.strip():
                path = f"{base}/{USER_SCRIPT}"
                scripts.append(ManagedFile(path, m.sieve_script.encode()))
                fields.append(f"userdb_sieve={path}")
            users.append(userdb_line(m, fields, root=root, uid=uid, gid=gid))
        # Scripts first: converge installs in this order, so the userdb never names a
        # script that is not there yet.
        log = str(conf.get("lda_log_file") or "")
        owner = f"user={mail_user(conf)}\nuid={uid}\ngid={gid}\nlog={log}\n"
        deliver = resources.files(__package__).joinpath("deliver.sh").read_bytes()
        return [
            *scripts,
            ManagedFile(OWNER, owner.encode()),
            # Before Postfix's master.cf names it (the LDA converges first).
            ManagedFile(DELIVER, deliver, 0o755),
            ManagedFile(CONF, self.dovecot_conf(state).encode()),
            ManagedFile(
                USERS,
                ("# Managed by UMS: regenerated on every converge.\n" + "".join(users)).encode(),
                0o640,
                "root",
                "dovecot",
            ),
        ]

    def dovecot_conf(self, state: DesiredState) -> str:
        conf = state.settings
        log = str(conf.get("lda_log_file") or "")
        if log and not _PATH.match(log):
            raise safe.UnsafeName(f"refusing LDA log file {log!r}")
        template = string.Template(
            resources.files(__package__).joinpath("dovecot.conf").read_text()
        )
        return template.substitute(
            hostname=safe.domain(state.node.hostname.lower()),
            base_dir=RUN_DIR,
            state_dir=STATE_DIR,
            log_lines=f"log_path = {log}" if log else "log_path = syslog",
            users=USERS,
            mail_user=mail_user(conf),
            mail_uid=int(conf.get("mail_uid", 5000)),
        )

    # ------------------------------------------------------------------ check

    def validate(self, conn: Connector, staged_root: str) -> None:
        config = f"{staged_root}/dovecot.conf"
        # Without DOVECOT_HOSTDOMAIN doveconf resolves the node's own name before it reads
        # the file: 20 s on a node without DNS. The value does not affect the check.
        result = conn.run(
            ["env", "DOVECOT_HOSTDOMAIN=localhost", "doveconf", "-c", config, "-n"],
            timeout=120,
        )
        if not result.ok or "Fatal:" in result.stderr or "Error:" in result.stderr:
            raise CheckFailed(self.name, f"$ doveconf -n\n{result.stderr.strip()}")
        # Compile every script that is new or changed since its binary (changed ones were
        # just written into the stage, so they are newer than the copied .svbin).
        result = conn.run(
            ["sh", "-c", _COMPILE_SCRIPT, "sh", f"{staged_root}/sieve", config], timeout=3600
        )
        if not result.ok:
            raise CheckFailed(self.name, (result.stdout + result.stderr).strip())

    # No compiled_files: a binary records the path it was compiled from, and Pigeonhole
    # will not reuse one compiled in the stage. activate compiles the live scripts.

    # ------------------------------------------------------------------ activate

    unit_names = ("dovecot",)

    def pidfiles(self, conn: Connector) -> list[str]:
        return [PIDFILE]

    def activate(self, conn: Connector, changed: list[ManagedFile]) -> None:
        paths = {f.path for f in changed}
        owner = next((f.content for f in changed if f.path == OWNER), None)
        settings = read_owner(owner if owner is not None else conn.get_file(OWNER) or b"")
        user, uid, gid = settings["user"], settings["uid"], settings["gid"]
        result = conn.run(["sh", "-c", _ENSURE_USER, "sh", user, uid, gid], timeout=120)
        if not result.ok:
            raise CheckFailed(self.name, f"mail user: {(result.stdout + result.stderr).strip()}")
        conn.run(["mkdir", "-p", "--", RUN_DIR, STATE_DIR, SIEVE_DIR]).check()
        # Scripts are tenant data: readable by the LDA (the mail user), by no one else.
        conn.run(["chown", f"root:{gid}", SIEVE_DIR]).check()
        conn.run(["chmod", "0750", SIEVE_DIR]).check()
        log = settings["log"]
        if log:
            # The master (root) and dovecot-lda (the mail user) both append to it.
            conn.run(["mkdir", "-p", "--", posixpath.dirname(log)]).check()
            conn.run(["touch", "--", log]).check()
            conn.run(["chown", f"{uid}:{gid}", log]).check()
            conn.run(["chmod", "0640", log]).check()
        users = next((f for f in changed if f.path == USERS), None)
        if users is not None:
            prune_scripts(conn, users.content.decode())
        scripts = "".join(f"{f.path}\n" for f in changed if f.path.endswith(".sieve"))
        if scripts:
            # Validated in the stage already; this only writes the binaries Pigeonhole
            # reuses (the mail user may not write them itself). Until then the LDA
            # compiles in memory, so mail is never filtered by a stale binary.
            result = conn.run(
                ["sh", "-c", _COMPILE_LIVE, "sh", CONF], input=scripts.encode(), timeout=3600
            )
            if not result.ok:
                raise CheckFailed(self.name, (result.stdout + result.stderr).strip())
        running = conn.run(["sh", "-c", _RUNNING, "sh", PIDFILE]).ok
        if not running:
            verb, argv = "start", ["sh", "-c", _START, "sh", CONF]
        elif CONF in paths:
            verb, argv = "reload", ["doveadm", "-c", CONF, "reload"]
        else:
            return  # the userdb and scripts are read afresh on every delivery
        result = conn.run(argv, timeout=120)
        if not result.ok:
            raise CheckFailed(self.name, f"dovecot {verb} failed: {result.stdout}{result.stderr}")


def read_owner(content: bytes) -> dict[str, str]:
    """The mail user, its ids and the log file, as :meth:`LdaService.render` wrote them."""
    values = dict(
        line.split("=", 1) for line in content.decode(errors="replace").splitlines() if "=" in line
    )
    user, uid, gid = values.get("user", ""), values.get("uid", ""), values.get("gid", "")
    log = values.get("log", "")
    if not _USER_NAME.match(user) or not uid.isdigit() or not gid.isdigit():
        raise CheckFailed("lda", f"{OWNER} does not name a valid mail user")
    if log and not _PATH.match(log):
        raise CheckFailed("lda", f"{OWNER} names an invalid log file")
    return {"user": user, "uid": uid, "gid": gid, "log": log}


def prune_scripts(conn: Connector, users: str) -> None:
    """Remove scripts (and binaries) the userdb no longer names: deleted filters,
    responders switched off, mailboxes gone."""
    keep = sorted(
        {
            field.split("=", 1)[1]
            for line in users.splitlines()
            if not line.startswith("#")
            for field in line.split("::")[-1].split()
            if field.startswith(("userdb_sieve=", "userdb_sieve_before="))
        }
    )
    body = "".join(f"{path}\n{path[: -len('.sieve')]}.svbin\n" for path in keep)
    result = conn.run(["sh", "-c", _PRUNE_SCRIPT, "sh", SIEVE_DIR], input=body.encode())
    if not result.ok:
        raise CheckFailed("lda", f"removing old Sieve scripts failed: {result.stderr.strip()}")


# Compiles each *.sieve under $1 whose .svbin is missing or not newer, with the staged
# configuration $2 (its extensions and limits). Paths are only ever quoted arguments.
_COMPILE_SCRIPT = r"""
dir=$1 conf=$2
[ -d "$dir" ] || exit 0
find "$dir" -type f -name '*.sieve' | while IFS= read -r src; do
  bin="${src%.sieve}.svbin"
  if [ "$bin" -nt "$src" ]; then continue; fi
  if ! out=$(sievec -c "$conf" -- "$src" "$bin" 2>&1); then
    printf '%s: %s\n' "${src#"$dir"/}" "$out"
    exit 1
  fi
  chmod 0644 -- "$bin" || exit 1
done
"""

# Compiles each script named on stdin next to itself, with the live configuration $1.
_COMPILE_LIVE = r"""
conf=$1
while IFS= read -r src; do
  [ -n "$src" ] || continue
  bin="${src%.sieve}.svbin"
  if ! out=$(sievec -c "$conf" -- "$src" "$bin" 2>&1); then
    printf '%s: %s\n' "$src" "$out"
    exit 1
  fi
  chmod 0644 -- "$bin" || exit 1
done
"""

# Removes every file under $1 not named on stdin (sorted lists, one pass: fine for 100k
# mailboxes), then the folders left empty.
_PRUNE_SCRIPT = r"""
dir=$1
[ -d "$dir" ] || exit 0
keep=$(mktemp) && all=$(mktemp) || exit 1
trap 'rm -f -- "$keep" "$all"' EXIT
LC_ALL=C sort > "$keep"
find "$dir" -type f | LC_ALL=C sort > "$all"
LC_ALL=C comm -23 "$all" "$keep" | while IFS= read -r path; do rm -f -- "$path"; done
find "$dir" -mindepth 1 -type d -empty -delete
"""

# Makes sure the account $1 exists with uid $2 (creating group $3 if needed); refuses
# when the name or the uid is taken otherwise, rather than sharing someone's account.
_ENSURE_USER = r"""
name=$1 uid=$2 gid=$3
check() {
  line=$(getent passwd "$name") || return 1
  have=$(printf '%s' "$line" | cut -d: -f3)
  [ "$have" = "$uid" ] && return 0
  echo "user $name exists with uid $have, not $uid"; exit 1
}
check && exit 0
if other=$(getent passwd "$uid"); then
  echo "uid $uid already belongs to ${other%%:*}"; exit 1
fi
getent group "$gid" >/dev/null || groupadd -r -g "$gid" "$name" 2>/dev/null || true
useradd -r -u "$uid" -g "$gid" -d /nonexistent -M -s /usr/sbin/nologin "$name" 2>/dev/null
check && exit 0
echo "could not create user $name"; exit 1
"""
