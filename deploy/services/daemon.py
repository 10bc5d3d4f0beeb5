"""Stopping a daemon by its pid file, the way every service without systemd needs it.

Used by :meth:`deploy.services.base.Service.stop` implementations (node actions:
restart, reboot and shutdown of a node without systemd, see :mod:`deploy.node_daemons`).
"""

from __future__ import annotations

from deploy.connector.base import Connector

# Arguments: seconds to wait, then pid files. Each named process that runs gets SIGTERM;
# once it has exited (a zombie counts as exited: its sockets are closed) the next one is
# stopped; one still alive after the wait gets SIGKILL. Prints the pids it stopped.
_STOP_SCRIPT = r"""
set -u
wait=$1; shift
alive() {
  kill -0 "$1" 2>/dev/null &&
    [ "$(sed -e 's/.*) //' -e 's/ .*//' "/proc/$1/stat" 2>/dev/null)" != Z ]
}
for f in "$@"; do
  p=$(cat -- "$f" 2>/dev/null | tr -dc 0-9) || continue
  [ -n "$p" ] && alive "$p" || continue
  kill -TERM "$p" 2>/dev/null
  i=0
  while alive "$p" && [ $i -lt $((wait * 10)) ]; do i=$((i+1)); sleep 0.1; done
  alive "$p" && kill -KILL "$p" 2>/dev/null
  echo "$p"
done
exit 0
"""

# Arguments: pid files. Prints the pid of each one whose process runs (not a zombie).
_PIDS_SCRIPT = r"""
for f in "$@"; do
  p=$(cat -- "$f" 2>/dev/null | tr -dc 0-9)
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null &&
    [ "$(sed -e 's/.*) //' -e 's/ .*//' "/proc/$p/stat" 2>/dev/null)" != Z ] && echo "$p"
done
exit 0
"""


def stop_pidfiles(conn: Connector, pidfiles: list[str], wait: int = 30) -> list[int]:
    """Stop the processes the pid files name, in order; returns the pids stopped."""
    if not pidfiles:
        return []
    result = conn.run(
        ["sh", "-c", _STOP_SCRIPT, "sh", str(int(wait)), *pidfiles],
        timeout=wait * len(pidfiles) + 30,
    )
    return [int(p) for p in result.stdout.split() if p.isdigit()]


def running_pids(conn: Connector, pidfiles: list[str]) -> list[int]:
    """Pids of the processes the pid files name that run now."""
    if not pidfiles:
        return []
    result = conn.run(["sh", "-c", _PIDS_SCRIPT, "sh", *pidfiles], timeout=60)
    return [int(p) for p in result.stdout.split() if p.isdigit()]
