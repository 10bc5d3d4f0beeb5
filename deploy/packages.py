"""Install the packages a node's services need, idempotently (apt on Debian, dnf on RHEL).

What is installed is asked first (``dpkg-query`` / ``rpm -q``, one command for all
packages), so a converge of a ready node installs nothing and runs no package manager.
Package names come from the service classes (constants), never from tenants.
"""

from __future__ import annotations

from collections.abc import Iterable

from .connector.base import CommandFailed, Connector
from .services.base import Service

# Postfix's Debian package asks how to configure itself; converge owns main.cf, so it
# must install with "No configuration" and without a prompt.
DEBCONF_PRESEED = b"postfix postfix/main_mailer_type select No configuration\n"
# Roundcube's dbconfig-common asks for a database server; SQLite needs none (converge
# creates the database the webmail node uses, deploy/services/roundcube).
ROUNDCUBE_PRESEED = (
    b"roundcube-core roundcube/dbconfig-install boolean true\n"
    b"roundcube-core roundcube/database-type select sqlite3\n"
)


class PackageInstallFailed(Exception):
    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


def wanted(services: Iterable[Service], os_family: str) -> list[str]:
    names: list[str] = []
    for service in services:
        for name in service.packages.get(os_family, ()):
            if name not in names:
                names.append(name)
    return names


def missing(conn: Connector, os_family: str, packages: list[str]) -> list[str]:
    """The subset of ``packages`` not installed on the node (one command)."""
    if not packages:
        return []
    if os_family == "debian":
        result = conn.run(
            ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", "--", *packages]
        )
        installed = {
            line.split()[0].split(":")[0]
            for line in result.stdout.splitlines()
            if len(line.split()) >= 2 and line.split()[1].startswith("ii")
        }
    else:
        result = conn.run(["rpm", "-q", "--qf", "%{NAME}\n", "--", *packages])
        installed = {
            line.strip()
            for line in result.stdout.splitlines()
            if line.strip() and " " not in line.strip()
        }
    return [p for p in packages if p not in installed]


def ensure(
    conn: Connector, os_family: str, packages: list[str], *, dry_run: bool = False
) -> list[str]:
    """Install what is missing; returns the packages (that would be) installed."""
    todo = missing(conn, os_family, packages)
    if not todo or dry_run:
        return todo
    if os_family == "debian":
        if "postfix" in todo:
            conn.run(["debconf-set-selections"], input=DEBCONF_PRESEED).check()
        if "roundcube-core" in todo:
            conn.run(["debconf-set-selections"], input=ROUNDCUBE_PRESEED).check()
        install = [
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "-o",
            "DPkg::Lock::Timeout=600",
            "install",
            "-y",
            "--no-install-recommends",
            "--",
            *todo,
        ]
        result = conn.run(install, timeout=1800)
        if not result.ok:
            # Stale package lists are the usual cause; refresh once and retry.
            conn.run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "update"], timeout=1800)
            result = conn.run(install, timeout=1800)
    else:
        result = conn.run(["dnf", "-y", "install", "--", *todo], timeout=1800)
    try:
        result.check()
    except CommandFailed as exc:
        raise PackageInstallFailed(
            f"installing {', '.join(todo)} failed", (result.stdout + result.stderr)[-5000:]
        ) from exc
    still = missing(conn, os_family, todo)
    if still:
        raise PackageInstallFailed(f"still missing after install: {', '.join(still)}")
    return todo
