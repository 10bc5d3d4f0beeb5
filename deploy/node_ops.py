"""Operations on one node over an open connector: facts, services, keys, reboot.

Each function takes a connected :class:`~deploy.connector.base.Connector` and plain
values; commands are argument lists, and names that reach a command were validated by
the caller (``servers.actions.validate_service_name``).
"""

from __future__ import annotations

from typing import Any

from .connector.base import CommandResult, Connector, ConnectorError
from .connector.keys import load_public_key

AUTHORIZED_KEYS = "/root/.ssh/authorized_keys"


def read_os_release(conn: Connector) -> dict[str, str]:
    data = conn.get_file("/etc/os-release") or b""
    values: dict[str, str] = {}
    for line in data.decode(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"')
    return values


def gather_facts(conn: Connector) -> dict[str, Any]:
    """OS, CPU count, memory and hostname as the node reports them now."""
    release = read_os_release(conn)
    cpus = conn.run(["nproc"]).stdout.strip()
    meminfo = (conn.get_file("/proc/meminfo") or b"").decode(errors="replace")
    mem_kb = 0
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    hostname = conn.run(["hostname"]).stdout.strip()
    return {
        "os_id": release.get("ID", "")[:32],
        "os_version": release.get("VERSION_ID", "")[:32],
        "os_pretty_name": release.get("PRETTY_NAME", "")[:200],
        "cpus": int(cpus) if cpus.isdigit() else 0,
        "memory_mb": mem_kb // 1024,
        "hostname": hostname[:253],
    }


def uses_systemd(conn: Connector) -> bool:
    return conn.run(["test", "-d", "/run/systemd/system"]).exit_code == 0


def service_command(conn: Connector, service: str, verb: str) -> CommandResult:
    """Start/stop/restart a service with systemd (RockyLinux) or SysV ``service`` (Debian
    containers without systemd)."""
    if verb not in {"start", "stop", "restart", "reload"}:
        raise ValueError(f"unsupported service verb {verb!r}")
    if uses_systemd(conn):
        return conn.run(["systemctl", verb, service], timeout=120)
    return conn.run(["service", service, verb], timeout=120)


def reboot(conn: Connector) -> CommandResult | None:
    """Ask the machine to reboot; the connection may drop before an answer comes back.
    Only for systemd nodes: see deploy/node_daemons.py for the others."""
    try:
        return conn.run(["reboot"], timeout=30)
    except ConnectorError:
        return None


def poweroff(conn: Connector) -> CommandResult | None:
    """Ask a systemd node to power off; the connection may drop before an answer."""
    try:
        return conn.run(["systemctl", "poweroff"], timeout=30)
    except ConnectorError:
        return None


def _key_blob(line: str) -> bytes | None:
    try:
        return load_public_key(line).asbytes()
    except Exception:
        return None


def authorized_keys(conn: Connector) -> list[str]:
    data = conn.get_file(AUTHORIZED_KEYS)
    return [] if data is None else data.decode(errors="replace").splitlines()


def write_authorized_keys(conn: Connector, lines: list[str]) -> None:
    conn.run(["mkdir", "-p", "-m", "700", "/root/.ssh"]).check()
    body = "\n".join(lines).rstrip("\n") + "\n" if lines else ""
    conn.put_file(AUTHORIZED_KEYS, body.encode(), mode=0o600)


def add_authorized_key(conn: Connector, public_key: str) -> bool:
    """Append ``public_key`` unless present; True when the file changed."""
    lines = authorized_keys(conn)
    blob = _key_blob(public_key)
    if any(_key_blob(line) == blob for line in lines if line.strip()):
        return False
    write_authorized_keys(conn, [*lines, public_key])
    return True


def remove_authorized_keys(conn: Connector, public_keys: list[str]) -> int:
    """Remove every line holding one of ``public_keys``; returns how many were removed."""
    blobs = {_key_blob(k) for k in public_keys} - {None}
    lines = authorized_keys(conn)
    kept = [line for line in lines if not line.strip() or _key_blob(line) not in blobs]
    removed = len(lines) - len(kept)
    if removed:
        write_authorized_keys(conn, kept)
    return removed
