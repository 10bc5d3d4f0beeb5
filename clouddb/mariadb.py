"""MariaDB on a cloud DB node, driven over SSH: the instance UMS runs there, its
replication settings, GTID replication between two nodes, and the facts the reconciler
reads back (binlog and slave positions, ``SHOW SLAVE STATUS``).

The instance has its own paths (:data:`CONF`, :data:`DATADIR`, :data:`RUNDIR`) so it never
touches a distribution instance of the node; the controller is its init on nodes without
systemd (it starts it when it does not run, as :mod:`deploy.node_daemons` does for the
other services). Its configuration carries what replication needs at start: a unique
``server_id``, the binary log (``log_bin``, row format, ``log_slave_updates`` so a
promoted replica serves its own replicas) and ``read_only`` for every node that is not
the primary, so a fenced node that restarts stays read-only.

SQL goes to the ``mariadb`` client on the node's socket through stdin (never argv:
the replication password must not show in the process list); the node's root logs in
by ``unix_socket``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from backup.offnode_stream import relay
from deploy.connector.base import Connector
from deploy.services.daemon import running_pids, stop_pidfiles

CONF = "/etc/ums-clouddb/my.cnf"
DATADIR_ROOT = "/var/lib/ums-clouddb"
DATADIR = f"{DATADIR_ROOT}/data"
#: Set aside copies of a fenced node's databases (one dump per epoch), never pruned.
FENCED_DIR = f"{DATADIR_ROOT}/fenced"
RUNDIR = "/run/ums-clouddb"
SOCKET = f"{RUNDIR}/mysqld.sock"
PIDFILE = f"{RUNDIR}/mysqld.pid"
ERROR_LOG = f"{DATADIR_ROOT}/error.log"
#: Written once ``mariadb-install-db`` finished: a half-made data directory is redone.
INSTALLED = f"{DATADIR}/.ums-installed"
PORT = 3306
REPL_USER = "ums_repl"
#: Left out of the initial copy: the help tables are the server's own, and the slave
#: position table would overwrite the position the dump sets at its end.
DUMP_IGNORE = ("help_topic", "help_category", "help_relation", "help_keyword", "gtid_slave_pos")
_SYSTEM_DBS = {"mysql", "information_schema", "performance_schema", "sys"}
_ADDRESS_RE = re.compile(r"^[0-9A-Za-z.:-]{1,253}$")
_GTID_RE = re.compile(r"^(\d+-\d+-\d+)(,\d+-\d+-\d+)*$")


class MariaDbError(RuntimeError):
    """A MariaDB step on a node failed; the message is for administrators."""


@dataclass(frozen=True)
class SlaveStatus:
    master_host: str
    using_gtid: str
    io_running: str
    sql_running: str
    seconds_behind: int | None
    gtid_io_pos: str
    last_error: str

    @property
    def running(self) -> bool:
        return self.io_running == "Yes" and self.sql_running == "Yes"


def render_config(*, server_id: int, address: str, read_only: bool) -> str:
    if not _ADDRESS_RE.match(address):
        raise MariaDbError(f"invalid bind address {address!r}")
    if not 0 < int(server_id) < 2**32:
        raise MariaDbError(f"invalid server_id {server_id!r}")
    return (
        "# Written by UMS (cloud DB replication); changes are overwritten.\n"
        "[mariadbd]\n"
        "user=mysql\n"
        f"datadir={DATADIR}\n"
        f"socket={SOCKET}\n"
        f"pid-file={PIDFILE}\n"
        f"log_error={ERROR_LOG}\n"
        f"port={PORT}\n"
        f"bind-address={address}\n"
        "skip_name_resolve=ON\n"
        f"server_id={int(server_id)}\n"
        "log_bin=ums-bin\n"
        "relay_log=ums-relay-bin\n"
        "binlog_format=ROW\n"
        "log_slave_updates=ON\n"
        "expire_logs_days=7\n"
        f"read_only={'ON' if read_only else 'OFF'}\n"
    )


def _quote(value: str) -> str:
    """A SQL string literal (the values are ours: addresses, a generated password)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql(conn: Connector, statement: str, *, timeout: float = 120) -> list[dict[str, str]]:
    """Run ``statement`` (one or more, ``;``-separated) on the node's instance; the rows
    of the last result set as dicts (tab-separated batch output with its header)."""
    result = conn.run(
        ["mariadb", f"--socket={SOCKET}", "--batch", "--raw"],
        input=statement.encode(),
        timeout=timeout,
    )
    if not result.ok:
        raise MariaDbError(f"SQL on {conn.host}: {(result.stderr or result.stdout).strip()[:300]}")
    lines = result.stdout.splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]


def is_running(conn: Connector) -> bool:
    if not running_pids(conn, [PIDFILE]):
        return False
    return conn.run(["mariadb-admin", f"--socket={SOCKET}", "ping"], timeout=30).ok


_START = r"""
set -u
conf=$1 datadir=$2 rundir=$3 installed=$4 socket=$5 log=$6
mkdir -p "$rundir" "$(dirname "$datadir")"
chown mysql:mysql "$rundir" "$(dirname "$datadir")"
if [ ! -f "$installed" ]; then
  rm -rf "$datadir"
  mariadb-install-db --defaults-file="$conf" --auth-root-authentication-method=socket \
    >>"$log.install" 2>&1 || { tail -5 "$log.install"; exit 1; }
  touch "$installed"
fi
setsid mariadbd --defaults-file="$conf" </dev/null >>"$log.out" 2>&1 &
i=0
while [ $i -lt 300 ]; do
  mariadb-admin --socket="$socket" ping >/dev/null 2>&1 && exit 0
  i=$((i+1)); sleep 0.2
done
tail -20 "$log" 2>/dev/null
exit 1
"""


def start(conn: Connector) -> None:
    result = conn.run(
        ["sh", "-c", _START, "sh", CONF, DATADIR, RUNDIR, INSTALLED, SOCKET, ERROR_LOG],
        timeout=180,
    )
    if not result.ok:
        raise MariaDbError(f"mariadbd did not start on {conn.host}: {result.stdout[-500:]}")


def stop(conn: Connector) -> None:
    stop_pidfiles(conn, [PIDFILE], wait=60)


def ensure_instance(conn: Connector, *, server_id: int, address: str, read_only: bool) -> list[str]:
    """The instance configured as wanted and running; what was done (for the job log).

    A change of ``read_only`` alone is applied live; any other change (server id,
    address) restarts the instance, which the binary log needs."""
    wanted = render_config(server_id=server_id, address=address, read_only=read_only)
    have = (conn.get_file(CONF) or b"").decode(errors="replace")
    done = []
    running = is_running(conn)
    if have != wanted:
        conn.run(["mkdir", "-p", CONF.rsplit("/", 1)[0]]).check()
        conn.put_file(CONF, wanted.encode(), mode=0o644)
        only_read_only = _without_read_only(have) == _without_read_only(wanted)
        if running and only_read_only:
            set_read_only(conn, read_only)
            done.append("read_only")
        elif running:
            stop(conn)
            running = False
            done.append("restart")
        else:
            done.append("config")
    if not running:
        start(conn)
        done.append("start")
    return done


def _without_read_only(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("read_only=")]


def set_read_only(conn: Connector, on: bool) -> None:
    sql(conn, f"SET GLOBAL read_only={1 if on else 0}")


def read_only(conn: Connector) -> bool:
    rows = sql(conn, "SELECT @@global.read_only AS ro")
    return bool(rows) and rows[0]["ro"] == "1"


def ensure_repl_user(conn: Connector, password: str) -> None:
    """The replication account on the primary (replicated to the others with the data,
    so a promoted replica has it too)."""
    user = f"{_quote(REPL_USER)}@'%'"
    sql(
        conn,
        f"CREATE USER IF NOT EXISTS {user} IDENTIFIED BY {_quote(password)};\n"
        f"ALTER USER {user} IDENTIFIED BY {_quote(password)};\n"
        f"GRANT REPLICATION SLAVE, REPLICATION CLIENT, SLAVE MONITOR ON *.* TO {user};\n",
    )


def binlog_pos(conn: Connector) -> str:
    rows = sql(conn, "SELECT @@global.gtid_binlog_pos AS pos")
    return rows[0]["pos"] if rows else ""


def slave_pos(conn: Connector) -> str:
    rows = sql(conn, "SELECT @@global.gtid_slave_pos AS pos")
    return rows[0]["pos"] if rows else ""


def slave_status(conn: Connector) -> SlaveStatus | None:
    rows = sql(conn, "SHOW SLAVE STATUS")
    if not rows or not rows[0].get("Master_Host"):
        return None
    row = rows[0]
    behind = row.get("Seconds_Behind_Master", "NULL")
    return SlaveStatus(
        master_host=row.get("Master_Host", ""),
        using_gtid=row.get("Using_Gtid", ""),
        io_running=row.get("Slave_IO_Running", ""),
        sql_running=row.get("Slave_SQL_Running", ""),
        seconds_behind=int(behind) if behind.isdigit() else None,
        gtid_io_pos=row.get("Gtid_IO_Pos", ""),
        last_error=(row.get("Last_IO_Error") or row.get("Last_SQL_Error") or "")[:500],
    )


def change_master(conn: Connector, host: str, password: str) -> None:
    """Replicate from ``host`` by GTID from this node's slave position, and start."""
    if not _ADDRESS_RE.match(host):
        raise MariaDbError(f"invalid primary address {host!r}")
    sql(
        conn,
        "STOP SLAVE;\n"
        f"CHANGE MASTER TO MASTER_HOST={_quote(host)}, MASTER_PORT={PORT}, "
        f"MASTER_USER={_quote(REPL_USER)}, MASTER_PASSWORD={_quote(password)}, "
        "MASTER_CONNECT_RETRY=5, MASTER_USE_GTID=slave_pos;\n"
        "START SLAVE;\n",
    )


def start_slave(conn: Connector) -> None:
    sql(conn, "START SLAVE")


def user_databases(conn: Connector) -> list[str]:
    rows = sql(conn, "SHOW DATABASES")
    return [r["Database"] for r in rows if r.get("Database") not in _SYSTEM_DBS]


def set_aside(conn: Connector, epoch: int) -> str | None:
    """Dump a fenced node's databases to :data:`FENCED_DIR` (once per epoch) before its
    re-seed replaces them: writes it took after the last replicated one are kept for an
    administrator. The dump's path, or None when there was nothing to keep."""
    if not user_databases(conn):
        return None
    target = f"{FENCED_DIR}/e{int(epoch)}.sql"
    if conn.run(["test", "-s", target]).ok:
        return target
    script = (
        'set -e; mkdir -p "$1"; mariadb-dump --socket="$2" --single-transaction '
        '--all-databases > "$3.part"; mv "$3.part" "$3"'
    )
    result = conn.run(["sh", "-c", script, "sh", FENCED_DIR, SOCKET, target], timeout=3600)
    if not result.ok:
        raise MariaDbError(f"setting aside on {conn.host} failed: {result.stderr[:300]}")
    return target


def dump_argv() -> list[str]:
    return [
        "mariadb-dump",
        f"--socket={SOCKET}",
        "--single-transaction",
        "--gtid",
        "--master-data=1",
        "--all-databases",
        "--routines",
        "--events",
        "--triggers",
        *(f"--ignore-table=mysql.{t}" for t in DUMP_IGNORE),
    ]


def import_argv() -> list[str]:
    # Not binlogged here: the rows carry the primary's GTIDs (set from the dump's end);
    # this node's own binlog restarts at that position below.
    return ["mariadb", f"--socket={SOCKET}", "--init-command=SET SESSION sql_log_bin=0"]


def seed(
    primary: Connector,
    replica: Connector,
    primary_host: str,
    password: str,
    *,
    progress: Callable[[int], None] = lambda sent: None,
) -> dict[str, Any]:
    """The initial copy (``mariadb-dump --single-transaction --gtid --master-data``
    relayed by the controller into the replica) then GTID replication from the position
    the dump recorded. Safe to repeat: the replica's slave configuration is cleared
    first, so only a completed copy leaves it replicating (:func:`slave_status`)."""
    sql(replica, "STOP SLAVE; RESET SLAVE ALL; RESET MASTER; SET GLOBAL read_only=1")
    drops = "".join(f"DROP DATABASE `{d.replace('`', '``')}`;\n" for d in user_databases(replica))
    if drops:
        sql(replica, "SET SESSION sql_log_bin=0;\n" + drops)
    sent, _stderr = relay(primary, dump_argv(), replica, import_argv(), progress=progress)
    position = slave_pos(replica)
    if not _GTID_RE.match(position or ""):
        raise MariaDbError(f"the copy on {replica.host} recorded no GTID position")
    # A promoted replica goes on numbering after the primary's transactions, so the
    # other replicas can follow it by GTID without a new copy.
    sql(
        replica,
        f"SET GLOBAL gtid_binlog_state={_quote(position)}; FLUSH NO_WRITE_TO_BINLOG PRIVILEGES",
    )
    change_master(replica, primary_host, password)
    return {"bytes": sent, "gtid": position}


def wait_applied(conn: Connector, status: SlaveStatus, timeout: int = 30) -> bool:
    """Apply what the replica already received (its relay log) before promotion."""
    if not status.gtid_io_pos or not _GTID_RE.match(status.gtid_io_pos):
        return True
    rows = sql(
        conn,
        f"SELECT MASTER_GTID_WAIT({_quote(status.gtid_io_pos)}, {int(timeout)}) AS w",
        timeout=timeout + 30,
    )
    return bool(rows) and rows[0]["w"] == "0"


def promote(conn: Connector) -> None:
    """Stop replicating and take writes (idempotent)."""
    sql(conn, "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only=0")


def behind(primary_pos: str, replica_pos: str) -> int | None:
    """Transactions the replica lacks, summed over GTID domains (None: unknown)."""
    if not primary_pos:
        return 0 if not replica_pos else None

    def parse(pos: str) -> Mapping[str, int]:
        out: dict[str, int] = {}
        for part in filter(None, pos.split(",")):
            domain, _server, seq = part.split("-")
            out[domain] = max(out.get(domain, 0), int(seq))
        return out

    try:
        p, r = parse(primary_pos), parse(replica_pos)
    except ValueError:
        return None
    return sum(max(0, seq - r.get(domain, 0)) for domain, seq in p.items())
