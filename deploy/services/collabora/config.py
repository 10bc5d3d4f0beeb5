"""Collabora Online's ``coolwsd.xml`` for an office node: the settings UMS owns.

Pure functions from :class:`~deploy.services.base.DesiredState`; every value that reaches
the file is validated first (host names, addresses, the admin user name) and the XML is
built with ElementTree, so no value can add elements of its own.

* ``server_name``: the name browsers reach the office node by (the load balancers'
  ``web_hostnames["office"]``, else ``office.<the LB's domain>``, else the node itself);
* ``ssl.enable=false``, ``ssl.termination=true``: the load balancers terminate TLS and
  proxy plain HTTP, and coolwsd must still hand out ``https://`` URLs;
* ``storage.wopi``: WOPI allowed only for the cloud-files (Nextcloud) nodes of the office
  node's tree, as one alias group: the public cloud files name (what Nextcloud puts in
  ``WOPISrc``) with the nodes' own names and addresses as aliases;
* ``net.post_allow``: who may POST to coolwsd (the ``convert-to`` API): loopback, the
  cloud-files nodes and the load balancers (Nextcloud reaches coolwsd through them);
* ``admin_console``: enabled with a generated user whose password coolwsd stores only as
  a PBKDF2-SHA512 hash (``secure_password``, the format of ``coolconfig
  set-admin-password``); the password itself is kept Fernet-encrypted by the controller.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from deploy.services.base import DesiredState

#: coolwsd's HTTP port (its default); the load balancers' ``web_backend_ports["office"]``.
PORT = 9980
#: Paths of Collabora's Debian/RPM packages (their coolwsd.xml and container entrypoint).
PACKAGE_PATHS = {
    "sys_template_path": "/opt/cool/systemplate",
    "child_root_path": "/opt/cool/child-roots",
    "lo_template_path": "/opt/collaboraoffice",
    "file_server_root_path": "/usr/share/coolwsd",
}
#: PBKDF2 rounds of ``coolconfig set-admin-password`` (its default).
PBKDF2_ROUNDS = 10000

_HOST_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_USER_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class InvalidOfficeValue(ValueError):
    """A value that would reach coolwsd.xml is not what it must be; nothing is rendered."""


@dataclass(frozen=True)
class CollaboraData:
    """The office node's admin console credentials (``office`` app, encrypted at rest)."""

    admin_user: str
    admin_password: str


def hostname(value: str, what: str) -> str:
    if not isinstance(value, str) or not _HOST_RE.match(value):
        raise InvalidOfficeValue(f"invalid {what} {value!r}")
    return value.lower()


def address(value: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidOfficeValue(f"invalid {what} {value!r}") from None


def host_or_address(value: str, what: str) -> str:
    try:
        return address(value, what)
    except InvalidOfficeValue:
        return hostname(value, what)


def port(state: DesiredState) -> int:
    value = state.settings.get("collabora_port") or PORT
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise InvalidOfficeValue(f"invalid collabora_port {value!r}")
    return value


def lb_domain(state: DesiredState) -> str:
    """The load balancers' domain (what nginx serves ``<role>.<domain>`` under), or ""."""
    for name, _address in sorted(state.nodes_by_role.get("loadbalancer") or []):
        domain = name.partition(".")[2]
        if domain:
            return domain
    return ""


def public_name(state: DesiredState, role: str) -> str:
    """The name the load balancers serve ``role`` under, as nginx renders it; "" if none."""
    names = state.settings.get("web_hostnames") or {}
    if names.get(role):
        return hostname(str(names[role]), f"web_hostnames.{role}")
    domain = lb_domain(state)
    return hostname(f"{role}.{domain}", f"{role} name") if domain else ""


def server_name(state: DesiredState) -> str:
    return public_name(state, "office") or hostname(state.node.hostname, "node host name")


def wopi_hosts(state: DesiredState) -> tuple[str, list[str]]:
    """The alias group: the main WOPI host URL and the alias regexes (may be empty)."""
    nodes = sorted(state.nodes_by_role.get("cloudfiles") or [])
    names: list[str] = []
    for name, addr in nodes:
        names.append(hostname(name, "cloud files node name"))
        names.append(address(addr, "cloud files node address"))
    public = public_name(state, "cloudfiles")
    main = public or (names[0] if names else "")
    if not main:
        return "", []
    aliases = [rf"https?://{re.escape(n)}(:[0-9]+)?" for n in dict.fromkeys(names) if n != main]
    return f"https://{main}:443", aliases


def post_allow(state: DesiredState) -> list[str]:
    """Regexes of the client addresses coolwsd accepts POSTs (convert-to) from."""
    allowed = ["127\\.0\\.0\\.1", "::1", "::ffff:127\\.0\\.0\\.1"]
    for role in ("cloudfiles", "loadbalancer"):
        for _name, addr in sorted(state.nodes_by_role.get(role) or []):
            checked = address(addr, f"{role} node address")
            allowed.append(re.escape(checked))
            if ":" not in checked:
                allowed.append(re.escape(f"::ffff:{checked}"))
    return list(dict.fromkeys(allowed))


def secure_password(password: str) -> str:
    """``pbkdf2.sha512.<rounds>.<salt hex>.<hash hex>``, coolwsd's ``secure_password``.

    The salt is derived from the (random, per node) password so the file renders the same
    on every converge; a new password gives a new salt.
    """
    if not isinstance(password, str) or len(password) < 16:
        raise InvalidOfficeValue("the office admin password must be at least 16 characters")
    salt = hashlib.sha512(b"ums-coolwsd-salt\0" + password.encode()).digest()[:32]
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ROUNDS, 64)
    return f"pbkdf2.sha512.{PBKDF2_ROUNDS}.{salt.hex()}.{digest.hex()}"


def _add(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def render(state: DesiredState, credentials: CollaboraData | None) -> bytes:
    """coolwsd.xml for ``state.node``."""
    root = ET.Element("config")
    root.append(ET.Comment(" Managed by UMS (deploy/services/collabora): replaced on converge. "))
    _add(root, "server_name", server_name(state), type="string")
    # The file replaces the package's own coolwsd.xml, and coolwsd's built-in defaults for
    # these are development paths (``jails``, ``systemplate``...): the packaged values.
    for key, value in PACKAGE_PATHS.items():
        _add(root, key, value, type="path", relative="false")
    _add(_add(root, "cache_files"), "path", "/opt/cool/cache", type="path", relative="false")
    _add(_add(root, "logging"), "level", "warning", type="string")

    net = _add(root, "net")
    _add(net, "proto", "all", type="string")
    _add(net, "listen", "any", type="string")
    allow = _add(net, "post_allow", allow="true")
    for regex in post_allow(state):
        _add(allow, "host", regex)

    ssl = _add(root, "ssl")
    _add(ssl, "enable", "false", type="bool")
    _add(ssl, "termination", "true", type="bool")

    storage = _add(root, "storage")
    _add(storage, "filesystem", allow="false")
    main, aliases = wopi_hosts(state)
    wopi = _add(storage, "wopi", allow="true" if main else "false")
    groups = _add(wopi, "alias_groups", mode="groups")
    if main:
        group = _add(groups, "group")
        _add(group, "host", main, allow="true")
        for alias in aliases:
            _add(group, "alias", alias)

    console = _add(root, "admin_console")
    if credentials is None:
        _add(console, "enable", "false", type="bool")
    else:
        if not _USER_RE.match(credentials.admin_user or ""):
            raise InvalidOfficeValue(f"invalid office admin user {credentials.admin_user!r}")
        _add(console, "enable", "true", type="bool")
        _add(console, "username", credentials.admin_user)
        _add(console, "secure_password", secure_password(credentials.admin_password))

    ET.indent(root)
    return b'<?xml version="1.0"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"
