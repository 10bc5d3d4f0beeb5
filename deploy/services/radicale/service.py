"""Radicale (CalDAV/CardDAV) on cloud-files nodes: calendars, tasks and contacts per
mailbox, and each customer's global address book as a shared read-only address book.

Why Radicale: the product sheet puts DAV in Nextcloud, which cannot run on these
machines; Radicale (Debian ``radicale`` 3.1) is a complete CalDAV/CardDAV server with a
plain filesystem store, so the DAV side of the service is real and testable. Files, all
rendered from :class:`~deploy.services.base.DesiredState` under :data:`ROOT`:

* ``config``: listener, our auth plugin, ``from_file`` rights, the store folder;
* ``users`` (0640, group ``radicale``): ``email:$6$hash`` for every enabled mailbox whose
  effective ``dav`` access is allowed, nothing else: a denied mailbox gets 401. Checked
  by ``ums_radicale_auth.py`` (Radicale's htpasswd backend cannot read SHA512-CRYPT);
* ``rights``: owner only on one's own collections, read-only on one's customer's global
  address book (``gal-<customer id>/addressbook``), read-only on the calendars of the
  group members that share theirs (``dav_sharing`` policy flag), nothing else;
* ``gal/index`` and ``gal/gal-<id>.vcf``: the published address books; after install
  ``ums_radicale_sync.py`` loads them into the store (Radicale's own whole-collection
  upload, under its storage lock) and creates each user's ``calendar`` (events and
  tasks) and ``contacts`` collections when missing.

Radicale reads ``rights`` on every request and the plugin re-reads ``users`` when it
changes, so only a changed ``config`` or plugin restarts the daemon.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from importlib import resources

from deploy.connector.base import Connector
from deploy.services.base import (
    CheckFailed,
    DavGroupData,
    DesiredState,
    MailboxData,
    ManagedFile,
    Service,
)

from .. import probes
from ..postfix import safe

__all__ = ["GAL_PREFIX", "PORT", "ROOT", "RadicaleService", "gal_key"]

ROOT = "/etc/ums-radicale"
STORE = "/var/lib/ums-radicale"
RUN_DIR = "/run/ums-radicale"
PIDFILE = f"{RUN_DIR}/radicale.pid"
LOG = f"{STORE}/radicale.log"
PORT = 5232
USER = "radicale"
GAL_PREFIX = "gal-"
PLUGIN = "ums_radicale_auth"
SYNC = "ums_radicale_sync.py"
#: Files whose change needs a daemon restart (the rest are read per request).
#: Radicale's interpreter (Debian's and EPEL's packages both use it), never a PATH lookup.
PYTHON = "/usr/bin/python3"
#: Seconds the probe gives a (re)started Radicale to listen (see probe).
START_SECONDS = 45
RESTART_FILES = (f"{ROOT}/config", f"{ROOT}/{PLUGIN}.py")
_LISTEN = re.compile(r"^(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):\d{1,5}$")


def gal_key(customer_id: int) -> str:
    """The top-level collection of a customer's address book: ``gal-<id>``."""
    if not isinstance(customer_id, int) or isinstance(customer_id, bool) or customer_id < 1:
        raise safe.UnsafeName(f"refusing customer id {customer_id!r}")
    return f"{GAL_PREFIX}{customer_id}"


def listen(state: DesiredState) -> str:
    """``address:port`` Radicale binds: the node's own address unless set (the load
    balancers reach it there, ``web_backend_ports`` ``{"cloudfiles": 5232}``)."""
    address = state.node.address
    default = f"[{address}]:{PORT}" if ":" in address else f"{address}:{PORT}"
    value = str(state.settings.get("dav_listen", default))
    if not _LISTEN.match(value) or not 0 < int(value.rsplit(":", 1)[1]) < 65536:
        raise safe.UnsafeName(f"refusing dav_listen {value!r}")
    return value


def dav_users(state: DesiredState) -> list[MailboxData]:
    """Enabled mailboxes whose effective CalDAV/CardDAV access is allowed, checked."""
    hosted = {safe.domain(d.name) for d in state.domains if d.enabled}
    users = [m for m in safe.hosted_mailboxes(state.mailboxes, hosted) if m.protocols.get("dav")]
    for m in users:
        safe.password_hash(m.password_hash)
    return users


def _alternatives(values: list[str]) -> str:
    return "|".join(re.escape(v) for v in sorted(values))


def rights(state: DesiredState, users: list[MailboxData]) -> str:
    """The ``from_file`` rights; the first matching section wins (Radicale's rule)."""
    allowed = {m.email for m in users}
    lines = [
        "# Managed by UMS (deploy/services/radicale): replaced on every converge.",
        "# R/W: plain collections, r/w: address books and calendars.",
        "[root]\nuser: .+\ncollection:\npermissions: R",
        "[principal]\nuser: .+\ncollection: {user}\npermissions: RW",
        "[own]\nuser: .+\ncollection: {user}/[^/]+\npermissions: rw",
    ]
    for group in sorted(state.dav_groups, key=lambda g: g.customer_id):
        key = gal_key(group.customer_id)
        domains = [safe.domain(d) for d in group.domains]
        if not domains:
            continue
        members = rf"[^@/]+@(?:{_alternatives(domains)})"
        lines.append(
            f"[{key}]\nuser: {members}\ncollection: {key}(?:/addressbook)?\npermissions: Rr"
        )
        sharers = [safe.hosted_address(e) for e in group.calendar_sharers if e in allowed]
        if sharers:
            lines.append(
                f"[{key}-calendars]\nuser: {members}\n"
                f"collection: (?:{_alternatives(sharers)})/calendar\npermissions: r"
            )
    return "\n".join(lines) + "\n"


def gal_files(groups: list[DavGroupData]) -> list[ManagedFile]:
    index = ["# Managed by UMS: <collection> <sha256 of its vCards> <display name>"]
    files = []
    for group in sorted(groups, key=lambda g: g.customer_id):
        key = gal_key(group.customer_id)
        data = group.vcards.encode("utf-8")
        name = safe.config_value("address book name", group.name) or key
        index.append(f"{key} {hashlib.sha256(data).hexdigest()} {name}")
        files.append(ManagedFile(f"{ROOT}/gal/{key}.vcf", data, mode=0o640, group=USER))
    files.append(ManagedFile(f"{ROOT}/gal/index", ("\n".join(index) + "\n").encode()))
    return files


class RadicaleService(Service):
    """Radicale's configuration, users, rights and published address books."""

    name = "radicale"
    roles = frozenset({"cloudfiles"})
    packages = {"debian": ("radicale",), "rhel": ("radicale",)}
    config_root = ROOT

    def render(self, state: DesiredState) -> list[ManagedFile]:
        users = dav_users(state)
        delay = int(state.settings.get("dav_auth_delay", 1))
        if not 0 <= delay <= 60:
            raise safe.UnsafeName(f"refusing dav_auth_delay {delay!r}")
        conf = f"""# Managed by UMS (deploy/services/radicale): replaced on every converge.
[server]
hosts = {listen(state)}

[auth]
type = {PLUGIN}
htpasswd_filename = {ROOT}/users
delay = {delay}

[rights]
type = from_file
file = {ROOT}/rights

[storage]
filesystem_folder = {STORE}/collections

[web]
type = none

[logging]
level = warning
"""
        header = "# Managed by UMS: mailboxes with CalDAV/CardDAV access.\n"
        users_file = header + "".join(f"{m.email}:{m.password_hash}\n" for m in users)
        package = resources.files(__package__)
        return [
            ManagedFile(f"{ROOT}/config", conf.encode()),
            ManagedFile(f"{ROOT}/users", users_file.encode(), mode=0o640, group=USER),
            ManagedFile(f"{ROOT}/rights", rights(state, users).encode()),
            ManagedFile(f"{ROOT}/{PLUGIN}.py", package.joinpath(f"{PLUGIN}.py").read_bytes()),
            ManagedFile(f"{ROOT}/{SYNC}", package.joinpath(SYNC).read_bytes()),
            *gal_files(state.dav_groups),
        ]

    def validate(self, conn: Connector, staged_root: str) -> None:
        """Radicale loads the staged configuration, rights and plugin; vCards parse."""
        result = conn.run([PYTHON, "-c", _CHECK, staged_root, ROOT, PLUGIN], timeout=120)
        if not result.ok:
            raise CheckFailed(self.name, (result.stdout + result.stderr).strip()[-4000:])

    def activate(self, conn: Connector, changed: list[ManagedFile]) -> None:
        """Load the store from the new files, then (re)start the daemon if it must."""
        conn.run(["mkdir", "-p", f"{STORE}/collections", RUN_DIR]).check()
        # Not recursive: everything below is written by the sync step and Radicale, both
        # running as the service user (a recursive chown would walk every card each time).
        conn.run(["chown", f"{USER}:{USER}", STORE, f"{STORE}/collections"]).check()
        if not conn.run(["test", "-f", f"{ROOT}/{SYNC}"]).ok:
            # A rollback to "no previous files" (the first install failed): nothing to run.
            return
        sync = conn.run(
            ["runuser", "-u", USER, "--", PYTHON, f"{ROOT}/{SYNC}", f"{ROOT}/config", ROOT],
            timeout=600,
        )
        if not sync.ok:
            raise CheckFailed(self.name, f"store sync failed:\n{sync.stdout}{sync.stderr}")
        restart = any(f.path in RESTART_FILES for f in changed) or not changed
        pid = (conn.get_file(PIDFILE) or b"").strip().decode(errors="replace")
        running = pid.isdigit() and conn.run(["kill", "-0", pid]).ok
        if conn.run(["systemctl", "cat", UNIT]).ok:
            conn.run(["mkdir", "-p", posixpath.dirname(DROP_IN)]).check()
            if conn.get_file(DROP_IN) != _DROP_IN:
                conn.put_file(DROP_IN, _DROP_IN, mode=0o644)
                conn.run(["systemctl", "daemon-reload"]).check()
            conn.run(["systemctl", "enable", UNIT])
            verb = "restart" if restart else "start"
            conn.run(["systemctl", verb, UNIT], timeout=120).check()
            return
        if running and not restart:
            return
        if running:
            conn.run(["kill", pid]).check()
            conn.run(["sh", "-c", _WAIT_GONE, "sh", pid], timeout=30)
        self._start(conn)

    def _start(self, conn: Connector) -> None:
        result = conn.run(["sh", "-c", _START, "sh", ROOT, PIDFILE, LOG, USER], timeout=60)
        if not result.ok:
            raise CheckFailed(self.name, f"radicale did not start:\n{result.stdout}{result.stderr}")

    def probe(self, conn: Connector, state: DesiredState, *, strict: bool = True) -> str:
        """Radicale answers an unauthenticated PROPFIND with 401 (it runs, auth is on).

        Up to :data:`START_SECONDS`: Python's HTTP server looks up the name of the address
        it binds (``getfqdn``) before it listens, which waits for DNS on a node whose
        resolver does not answer."""
        host, port = listen(state).rsplit(":", 1)
        # A wildcard listener is probed on loopback.
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host.strip("[]"), host.strip("[]"))  # noqa: S104
        return probes.run(conn, state, self.name, HTTP_PROBE, host, port, str(START_SECONDS))


UNIT = "radicale"
DROP_IN = f"/etc/systemd/system/{UNIT}.service.d/ums.conf"
_DROP_IN = f"""# Managed by UMS (deploy/services/radicale): Radicale with UMS's configuration.
[Service]
Environment=PYTHONPATH={ROOT}
ExecStart=
ExecStart=/usr/bin/python3 -m radicale --config {ROOT}/config
Restart=on-failure
""".encode()

# argv: root, pid file, log, user. Radicale 3 has no daemon mode: started in the
# background under its own user, its pid recorded for the next converge.
_START = r"""
root=$1; pidfile=$2; log=$3; user=$4
cd / || exit 1
# setpriv execs (runuser would stay as a parent and kill it when the SSH session ends).
PYTHONPATH=$root setsid nohup setpriv --reuid="$user" --regid="$user" --init-groups \
  /usr/bin/python3 -m radicale --config "$root/config" >>"$log" 2>&1 </dev/null &
echo $! > "$pidfile"
sleep 0.3
kill -0 "$(cat "$pidfile")" || { tail -n 20 "$log"; exit 1; }
"""

_WAIT_GONE = 'for i in $(seq 50); do kill -0 "$1" 2>/dev/null || exit 0; sleep 0.2; done; exit 1'

# argv: stage, live root, plugin module. The staged config points at live paths; the
# check rewrites them to the stage, loads Radicale's configuration, the auth plugin and
# the rights file as Radicale does, and parses every vCard with Radicale's item checks.
_CHECK = r"""
import configparser, os, sys
stage, root, plugin = sys.argv[1:4]
sys.path.insert(0, stage)
from radicale import config, item as radicale_item, rights
import vobject
text = open(os.path.join(stage, "config")).read().replace(root + "/", stage + "/")
path = os.path.join(stage, ".check.conf")
with open(path, "w") as handle:
    handle.write(text)
try:
    configuration = config.load([(path, False)])
finally:
    os.remove(path)
__import__(plugin).Auth(configuration)
checker = rights.load(configuration)
checker.authorization("check@example.invalid", "/check@example.invalid/calendar/")
parser = configparser.ConfigParser()
parser.read(os.path.join(stage, "rights"))
gal = os.path.join(stage, "gal")
for line in open(os.path.join(gal, "index")):
    if line.strip() and not line.startswith("#"):
        key = line.split(" ", 1)[0]
        cards = list(vobject.readComponents(open(os.path.join(gal, key + ".vcf")).read()))
        radicale_item.check_and_sanitize_items(cards, is_collection=True, tag="VADDRESSBOOK")
print("ok: %d rights sections" % len(parser.sections()))
"""

# argv: host, port, seconds.
HTTP_PROBE = (
    r"""
import http.client, sys, time
host, port = sys.argv[1], int(sys.argv[2])

def attempt():
    try:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("PROPFIND", "/", headers={"Depth": "0"})
        status = conn.getresponse().status
        conn.close()
    except OSError as exc:
        return False, "%s:%d: %s" % (host, port, exc or type(exc).__name__)
    return status == 401, "PROPFIND / without credentials: %d" % status
"""
    + probes._RETRY
)
