"""nginx on load balancer nodes: HTTPS termination and upstreams to the web roles.

Renders, under :attr:`NginxService.config_root` (``/etc/nginx``):

* ``nginx.conf``: the main file. Every path it names inside the configuration tree is
  RELATIVE (``include ums/upstreams.conf``, ``ssl_certificate ums/tls/x.crt``). nginx
  resolves those against the directory of the ``-c`` file, so ``nginx -t -c
  <staged_root>/nginx.conf`` checks the staged tree as a whole (new includes and new
  certificates together) rather than the staged main file with the live includes.
* ``ums/upstreams.conf``: one ``upstream ums_<role>`` per web role that has nodes.
* ``ums/sites.conf``: port 80 redirects to HTTPS (except ACME HTTP-01 challenges); one
  HTTPS server per web role, proxying to its upstream.
* ``ums/tls/<name>.crt`` (0644) and ``ums/tls/<name>.key`` (0600).

Inputs from ``DesiredState``:

* ``nodes_by_role[role]`` for role in :data:`WEB_ROLES`: ``[(hostname, address)]``;
* ``settings["tls_versions"]``: e.g. ``["TLSv1.2"]`` (default) or ``["TLSv1", "TLSv1.1",
  "TLSv1.2"]``; ``"1.0"``/``"1.1"``/``"1.2"``/``"1.3"`` are accepted too;
* ``settings["web_hostnames"]``: ``{role: hostname}``; a role without one is served as
  ``<role>.<the load balancer's domain>``;
* ``settings["web_backend_ports"]``: ``{role: port}``, default 80;
* ``settings["tls_certificates"]``: ``{name: {"cert": pem, "key": pem}}`` keyed by
  hostname, with an optional ``"default"`` used for hostnames without their own (see
  :func:`deploy.services.nginx.certs.certificates_setting`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from deploy.connector.base import Connector
from deploy.services.base import CheckFailed, DesiredState, ManagedFile, ProbeFailed, Service

from .. import probes
from .certs import valid_cert_name

__all__ = ["WEB_ROLES", "MissingCertificate", "NginxService", "tls_protocols"]

#: Web roles the load balancer fronts, in rendering order.
WEB_ROLES: tuple[str, ...] = ("webmail", "cloudfiles", "chat", "office")

#: Roles whose backends keep sessions of their own (Roundcube's per node): a client
#: stays on one backend while it is up.
STICKY_ROLES: frozenset[str] = frozenset({"webmail"})

#: Where ACME HTTP-01 challenge answers are pushed (deploy.lb_certificates): nginx serves
#: ``<dir>/.well-known/acme-challenge/<token>`` on port 80.
ACME_CHALLENGE_DIR = "/var/lib/ums/acme"

_VERSION_ALIASES = {
    "1.0": "TLSv1",
    "1": "TLSv1",
    "tlsv1": "TLSv1",
    "tlsv1.0": "TLSv1",
    "1.1": "TLSv1.1",
    "tlsv1.1": "TLSv1.1",
    "1.2": "TLSv1.2",
    "tlsv1.2": "TLSv1.2",
    "1.3": "TLSv1.3",
    "tlsv1.3": "TLSv1.3",
}
_ORDER = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")

# Forward-secret AEAD suites only when TLS 1.2+ is all that is offered.
_MODERN_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
# TLS 1.0/1.1 have no AEAD suites, and OpenSSL 3 refuses them at security level >= 1
# (their handshake signs with SHA-1): without @SECLEVEL=0 "TLSv1.1" in ssl_protocols
# would be accepted by nginx -t yet every 1.1 handshake would still fail.
_LEGACY_CIPHERS = "HIGH:!aNULL:!MD5:!RC4:!3DES:@SECLEVEL=0"

_HOST_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


class MissingCertificate(ValueError):
    """No certificate for a hostname the load balancer serves (run the renewal first)."""


def tls_protocols(settings: Mapping[str, object]) -> tuple[str, ...]:
    """The nginx ``ssl_protocols`` list from settings; TLS 1.2 only by default."""
    raw = settings.get("tls_versions") or ("TLSv1.2",)
    if isinstance(raw, str):
        raw = raw.replace(",", " ").split()
    versions: set[str] = set()
    for item in raw:  # type: ignore[union-attr]
        version = _VERSION_ALIASES.get(str(item).strip().lower())
        if version is None:
            raise ValueError(f"unknown TLS version {item!r}")
        versions.add(version)
    return tuple(v for v in _ORDER if v in versions)


def _host(value: str, what: str) -> str:
    """Return ``value`` when it is a plain hostname, else refuse (config injection)."""
    if not _HOST_RE.match(value):
        raise ValueError(f"invalid {what} {value!r}")
    return value


def _proxy(location: str, role: str, *, websocket: str = "$connection_upgrade") -> list[str]:
    """A location proxying to the role's upstream over HTTP/1.1 (WebSocket upgrades pass)."""
    lines = [
        f"    {location} {{",
        f"        proxy_pass http://ums_{role};",
        "        proxy_http_version 1.1;",
        "        proxy_set_header Host $host;",
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "        proxy_set_header X-Forwarded-Proto https;",
        "        proxy_set_header Upgrade $http_upgrade;",
        f"        proxy_set_header Connection {websocket};",
    ]
    if websocket == '"Upgrade"':
        # An editing session is one long-lived WebSocket.
        lines.append("        proxy_read_timeout 36000s;")
    return [*lines, "    }"]


def _office_locations() -> list[str]:
    """Collabora Online's paths only (its documented proxy layout, TLS ending here):
    static files and the editor page (/browser), WOPI discovery and capabilities, the
    editing WebSocket and admin console WebSocket, and the /cool REST paths (convert-to,
    downloads). Anything else on the office name is 404."""
    return [
        *_proxy("location ^~ /browser", "office"),
        *_proxy("location ^~ /hosting/discovery", "office"),
        *_proxy("location ^~ /hosting/capabilities", "office"),
        *_proxy("location ~ ^/cool/(.*)/ws$", "office", websocket='"Upgrade"'),
        *_proxy("location ^~ /cool/adminws", "office", websocket='"Upgrade"'),
        *_proxy("location ~ ^/(c|l)ool", "office"),
        "    location / {",
        "        return 404;",
        "    }",
    ]


def _backend(address: str, port: int) -> str:
    """``host:port`` for an upstream ``server`` line, brackets for IPv6."""
    if not 0 < int(port) < 65536:
        raise ValueError(f"invalid port {port!r}")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"{_host(address, 'backend address')}:{int(port)}"
    return f"[{ip}]:{int(port)}" if ip.version == 6 else f"{ip}:{int(port)}"


class NginxService(Service):
    """The load balancer's nginx. Constructor arguments exist for tests only.

    ``config_root``, ``runtime_dir`` (pid, logs and temp paths under one private folder),
    ``listen_address``/``http_port``/``https_port`` (a loopback instance on free ports)
    and ``extra_main``/``extra_http`` (raw text appended to the main/http contexts, used
    to inject an invalid directive) let a test run a real private nginx. Production uses
    the defaults.
    """

    name = "nginx"
    roles = frozenset({"loadbalancer"})
    packages = {"debian": ("nginx",), "rhel": ("nginx",)}
    config_root = "/etc/nginx"

    def __init__(
        self,
        *,
        config_root: str | None = None,
        runtime_dir: str | None = None,
        listen_address: str | None = None,
        http_port: int = 80,
        https_port: int = 443,
        extra_main: str = "",
        extra_http: str = "",
        acme_root: str = ACME_CHALLENGE_DIR,
    ) -> None:
        if config_root is not None:
            self.config_root = config_root.rstrip("/")
        self.runtime_dir = runtime_dir
        self.listen_address = listen_address
        self.http_port = http_port
        self.https_port = https_port
        self.extra_main = extra_main
        self.extra_http = extra_http
        self.acme_root = acme_root.rstrip("/")

    # ------------------------------------------------------------------ render

    def _path(self, relative: str) -> str:
        return f"{self.config_root}/{relative}"

    def _listen(self, port: int, extra: str = "") -> str:
        where = f"{self.listen_address}:{port}" if self.listen_address else str(port)
        return f"    listen {where}{extra};"

    def render(self, state: DesiredState) -> list[ManagedFile]:
        """nginx.conf, upstreams, sites and certificates for ``state.node``."""
        settings = state.settings
        protocols = tls_protocols(settings)
        legacy = any(p in ("TLSv1", "TLSv1.1") for p in protocols)
        certificates: Mapping[str, Mapping[str, str]] = settings.get("tls_certificates") or {}
        hostnames: Mapping[str, str] = settings.get("web_hostnames") or {}
        ports: Mapping[str, int] = settings.get("web_backend_ports") or {}
        lb_domain = state.node.hostname.partition(".")[2] or "localdomain"

        files: list[ManagedFile] = []
        cert_files: dict[str, tuple[str, str]] = {}

        def certificate_for(hostname: str) -> tuple[str, str]:
            name = hostname if hostname in certificates else "default"
            if name not in certificates:
                raise MissingCertificate(f"no TLS certificate for {hostname} (nor a default)")
            if name not in cert_files:
                if not valid_cert_name(name):
                    raise ValueError(f"invalid certificate name {name!r}")
                pair = certificates[name]
                crt, key = f"ums/tls/{name}.crt", f"ums/tls/{name}.key"
                files.append(ManagedFile(self._path(crt), pair["cert"].encode(), 0o644))
                # The private key is readable by root only (nginx reads it before
                # dropping privileges).
                files.append(ManagedFile(self._path(key), pair["key"].encode(), 0o600))
                cert_files[name] = (crt, key)
            return cert_files[name]

        upstreams: list[str] = ["# Managed by UMS: local changes are overwritten.", ""]
        sites: list[str] = ["# Managed by UMS: local changes are overwritten.", ""]
        redirect = "https://$host$request_uri"
        if self.https_port != 443:
            redirect = f"https://$host:{self.https_port}$request_uri"
        sites += [
            "server {",
            self._listen(self.http_port, " default_server"),
            "    server_name _;",
            "    location /.well-known/acme-challenge/ {",
            f"        root {self.acme_root};",
            "        default_type text/plain;",
            "    }",
            "    location / {",
            f"        return 301 {redirect};",
            "    }",
            "}",
            "",
        ]
        served: list[tuple[str, str]] = []  # (role, hostname)
        for role in WEB_ROLES:
            backends = state.nodes_by_role.get(role) or []
            if not backends:
                continue
            port = int(ports.get(role, 80))
            hostname = _host(hostnames.get(role) or f"{role}.{lb_domain}", "hostname")
            upstreams.append(f"upstream ums_{role} {{")
            if role in STICKY_ROLES:
                upstreams.append("    ip_hash;")
            elif role == "office":
                # Every session of one document must reach the same coolwsd (it holds the
                # document while it is edited): route by the WOPISrc query argument that
                # the editor page and its WebSocket carry.
                upstreams.append("    hash $arg_WOPISrc consistent;")
            for backend_host, address in sorted(backends):
                upstreams.append(f"    server {_backend(address or backend_host, port)};")
            upstreams += ["    keepalive 16;", "}", ""]
            served.append((role, hostname))

        # A default HTTPS server so an unknown Host gets 404, not the first role's site.
        if served or "default" in certificates:
            first = "default" if "default" in certificates else served[0][1]
            crt, key = certificate_for(first)
            sites += [
                "server {",
                self._listen(self.https_port, " ssl default_server"),
                "    server_name _;",
                f"    ssl_certificate {crt};",
                f"    ssl_certificate_key {key};",
                "    return 404;",
                "}",
                "",
            ]
        for role, hostname in served:
            crt, key = certificate_for(hostname)
            sites += [
                "server {",
                self._listen(self.https_port, " ssl"),
                f"    server_name {hostname};",
                f"    ssl_certificate {crt};",
                f"    ssl_certificate_key {key};",
                '    add_header Strict-Transport-Security "max-age=31536000" always;',
                *(_office_locations() if role == "office" else _proxy("location /", role)),
                "}",
                "",
            ]

        main = self._main_conf(protocols, _LEGACY_CIPHERS if legacy else _MODERN_CIPHERS, state)
        return [
            ManagedFile(self._path("nginx.conf"), main.encode()),
            ManagedFile(self._path("ums/upstreams.conf"), "\n".join(upstreams).encode()),
            ManagedFile(self._path("ums/sites.conf"), "\n".join(sites).encode()),
            *sorted(files, key=lambda f: f.path),
        ]

    def _main_conf(self, protocols: tuple[str, ...], ciphers: str, state: DesiredState) -> str:
        user = "nginx" if state.node.os_family == "rhel" else "www-data"
        if self.runtime_dir:
            run = self.runtime_dir.rstrip("/")
            pid, error_log, access_log = f"{run}/nginx.pid", f"{run}/error.log", f"{run}/access.log"
            temp = [
                f"    client_body_temp_path {run}/client_body;",
                f"    proxy_temp_path {run}/proxy;",
                f"    fastcgi_temp_path {run}/fastcgi;",
                f"    uwsgi_temp_path {run}/uwsgi;",
                f"    scgi_temp_path {run}/scgi;",
            ]
        else:
            pid, error_log, access_log = (
                "/run/nginx.pid",
                "/var/log/nginx/error.log",
                "/var/log/nginx/access.log",
            )
            temp = []
        lines = [
            "# Managed by UMS: local changes are overwritten.",
            f"user {user};",
            "worker_processes auto;",
            f"pid {pid};",
            f"error_log {error_log};",
            "",
            "events {",
            "    worker_connections 1024;",
            "}",
            "",
            "http {",
            "    default_type application/octet-stream;",
            f"    access_log {access_log};",
            *temp,
            "    server_tokens off;",
            "    sendfile on;",
            "    client_max_body_size 512m;",
            f"    ssl_protocols {' '.join(protocols)};",
            f"    ssl_ciphers {ciphers};",
            "    ssl_prefer_server_ciphers on;",
            "    ssl_session_cache shared:UMS_TLS:10m;",
            "    ssl_session_timeout 1h;",
            # WebSocket upgrade for chat and office, plain keep-alive otherwise.
            "    map $http_upgrade $connection_upgrade {",
            "        default upgrade;",
            "        '' '';",
            "    }",
            # Relative: resolved against the -c file's directory (see module docstring).
            "    include ums/upstreams.conf;",
            "    include ums/sites.conf;",
        ]
        if self.extra_http:
            lines.append(self.extra_http)
        lines.append("}")
        if self.extra_main:
            lines.append(self.extra_main)
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ check, reload

    def _prefix(self) -> str:
        return (self.runtime_dir or "/etc/nginx").rstrip("/") + "/"

    def validate(self, conn: Connector, staged_root: str) -> None:
        """``nginx -t`` on the staged tree; raise :class:`CheckFailed` with its output."""
        result = conn.run(
            [
                "nginx",
                "-t",
                "-q",
                "-c",
                f"{staged_root.rstrip('/')}/nginx.conf",
                "-p",
                self._prefix(),
            ]
        )
        if not result.ok:
            raise CheckFailed(self.name, (result.stderr + result.stdout).strip())

    def probe(self, conn: Connector, state: DesiredState, *, strict: bool = True) -> str:
        """``nginx -t`` on the live files, then (when it serves sites) an HTTPS request to
        its own listener with the first public host name."""
        checked = conn.run(
            ["nginx", "-t", "-q", "-c", self._path("nginx.conf"), "-p", self._prefix()]
        )
        if not checked.ok:
            raise ProbeFailed(self.name, (checked.stderr or checked.stdout).strip()[-2000:])
        hostnames = state.settings.get("web_hostnames") or {}
        if not hostnames:
            return "nginx -t passed"
        host = self.listen_address or "127.0.0.1"
        name = str(sorted(hostnames.items())[0][1])
        return probes.run(
            conn, state, self.name, probes.HTTPS_PROBE,
            host, str(self.https_port), _host(name, "host name"), str(probes.PROBE_SECONDS),
        )  # fmt: skip

    def stop(self, conn: Connector) -> list[int]:
        """``nginx -s quit``: workers finish their requests, then the master exits."""
        from deploy.services.daemon import running_pids, stop_pidfiles

        conf = self._path("nginx.conf")
        pidfiles = self.pidfiles(conn)
        pids = running_pids(conn, pidfiles)
        if pids:
            conn.run(["nginx", "-s", "quit", "-c", conf, "-p", self._prefix()], timeout=120)
            stop_pidfiles(conn, pidfiles)
        return pids

    def pidfiles(self, conn: Connector) -> list[str]:
        """The ``pid`` directive of the live nginx.conf."""
        text = (conn.get_file(self._path("nginx.conf")) or b"").decode(errors="replace")
        for line in text.splitlines():
            words = line.strip().rstrip(";").split()
            if len(words) == 2 and words[0] == "pid" and words[1].startswith("/"):
                return [words[1]]
        return []

    def activate(self, conn: Connector, changed: list[ManagedFile]) -> None:
        """Reload nginx (graceful: old workers finish their requests); start it if down."""
        conf = self._path("nginx.conf")
        reload = conn.run(["nginx", "-s", "reload", "-c", conf, "-p", self._prefix()])
        if reload.ok:
            return
        # No running master (fresh node, or stopped): start one with the new files.
        conn.run(["nginx", "-c", conf, "-p", self._prefix()]).check()
