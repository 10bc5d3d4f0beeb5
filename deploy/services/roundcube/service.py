"""Roundcube (Debian's package) on webmail nodes, served by PHP-FPM behind nginx.

Everything the service renders lives under ``/etc/roundcube`` (the converge engine stages
and checks one tree per service):

* ``config.inc.php``: Roundcube's configuration (replaces Debian's sample). IMAP is
  chosen per login by the ``ums`` plugin (the domain's IMAP node, port 993); mail is sent
  by submission on 587 of an SMTP node of the tree, with the mailbox's own login;
* ``ums/plugin/``: the ``ums`` plugin (``plugin/`` next to this module), linked from
  ``/var/lib/roundcube/plugins/ums`` by the preparation step;
* ``ums/webmail.json``: domain -> IMAP host, product name, address book;
* ``ums/allowed.txt``: the mailboxes whose effective access includes webmail (enabled
  mailboxes of enabled domains), the plugin's allow list: anyone else is refused at
  login, and a session ends once its mailbox leaves the list;
* ``ums/books/<customer>.json``: global address books, read-only in Roundcube;
* ``ums/totp.json`` (0640, web user's group): TOTP seeds of mailboxes with two-factor
  webmail login (mail/webmail.py); the plugin asks for the code after the password;
* ``ums/php-fpm.conf`` and ``ums/nginx.conf``: complete configurations of the node's own
  PHP-FPM and nginx, with their own pid files, so they never clash with a load
  balancer's nginx or the distribution's default pool.

Not enabled: Roundcube's ``managesieve`` plugin. Sieve scripts are written by the portal
only (mail/sieve.py) and delivered by converge: one writer per script.

Runtime folders (pid files, socket, logs, the SQLite database of sessions and
preferences, temp files) are under :data:`RUN_DIR`, :data:`LOG_DIR` and
:data:`STATE_DIR`; the preparation step creates them and the database.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from importlib import resources

from deploy.connector.base import Connector
from deploy.services.base import (
    CheckFailed,
    DesiredState,
    ManagedFile,
    Preparation,
    ProbeFailed,
    Service,
)

__all__ = ["RoundcubeService", "imap_uri", "php_string"]

ROOT = "/etc/roundcube"
DATA_DIR = f"{ROOT}/ums"
PLUGIN_LINK = "/var/lib/roundcube/plugins/ums"
PUBLIC_HTML = "/var/lib/roundcube/public_html"
RUN_DIR = "/run/ums-webmail"
LOG_DIR = "/var/log/ums-webmail"
STATE_DIR = "/var/lib/ums-webmail"
DATABASE = f"{STATE_DIR}/roundcube.db"
SCHEMA = "/usr/share/roundcube/SQL/sqlite.initial.sql"
WEB_USER = "www-data"

#: Files of the plugin shipped next to this module, relative to ``plugin/``.
PLUGIN_FILES = (
    "ums.php",
    "ums_gal.php",
    "localization/en_US.inc",
    "localization/ru_RU.inc",
    "localization/mn_MN.inc",
)

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})+$")
_ADDRESS_RE = re.compile(r"^[a-z0-9._+=-]{1,64}@[a-z0-9.-]{1,253}$")
_NAME_RE = re.compile(r"^[\w][\w .,&()'!-]{0,63}$")
_KEY_RE = re.compile(r"^[A-Za-z0-9+/=]{24}$")
_SEED_RE = re.compile(r"^[A-Z2-7]{16,128}$")

# The newest PHP-FPM the node has (Debian names it php-fpm<version>).
_PHP_FPM = 'exec "$(ls /usr/sbin/php-fpm* | sort -V | tail -n 1)" "$@"'

# Facts for the preparation step, one line each.
_FACTS = r"""
printf 'link %s\n' "$(readlink "$1" || true)"
test -s "$2" && echo db || echo nodb
for d in "$3" "$4" "$5" "$5/temp" "$5/nginx"; do
    if ! test -d "$d"; then echo "nodir $d"
    elif [ "$(stat -c %U "$d")" != "$6" ]; then echo "notowned $d"; fi
done
for name in php-fpm nginx; do
    test -f "$7/$name.conf" || continue
    pid=$(cat "$3/$name.pid" 2>/dev/null)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "up $name"; else echo "down $name"; fi
done
"""

# Creates the SQLite database from Roundcube's schema when it does not exist yet; a
# temporary file renamed into place, so a crash never leaves a half-made database.
_INIT_DB = r"""
[$db, $schema] = [$argv[1], $argv[2]];
if (file_exists($db)) exit(0);
$tmp = $db . '.tmp';
@unlink($tmp);
$pdo = new PDO('sqlite:' . $tmp);
$pdo->setAttribute(PDO::ATTR_ERRMODE, PDO::ERRMODE_EXCEPTION);
$pdo->exec(file_get_contents($schema));
$pdo = null;
rename($tmp, $db);
"""


def php_string(value: str) -> str:
    """A single-quoted PHP string literal (only backslash and quote are special)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _address(value: str) -> str:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        if not _DOMAIN_RE.match(value.lower()) and not re.match(r"^[a-z0-9-]{1,63}$", value):
            raise ValueError(f"invalid node address {value!r}") from None
        return value.lower()
    return f"[{ip}]" if ip.version == 6 else str(ip)


def imap_uri(address: str) -> str:
    """Roundcube's host string for an IMAP node: implicit TLS on 993."""
    return f"ssl://{_address(address)}:993"


def _name(value: str, what: str) -> str:
    if value and not _NAME_RE.match(value):
        raise ValueError(f"invalid {what} {value!r}")
    return value


class RoundcubeService(Service):
    """Roundcube, PHP-FPM and nginx on a webmail node (nginx listens on every address of
    the node: the load balancers connect to it)."""

    name = "roundcube"
    roles = frozenset({"webmail"})
    packages = {
        "debian": ("roundcube-core", "roundcube-sqlite3", "php-fpm", "php-sqlite3", "nginx", "curl")
    }
    config_root = ROOT
    check_cost = 1

    def applies_to_state(self, state: DesiredState) -> bool:
        # Roundcube is packaged for Debian here; a Rocky node would need EPEL's
        # roundcubemail and other paths (not built yet).
        return self.applies_to(state.node) and state.node.os_family == "debian"

    # ------------------------------------------------------------------ render

    def port(self, state: DesiredState) -> int:
        ports: Mapping[str, int] = state.settings.get("web_backend_ports") or {}
        port = ports.get("webmail", 80)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"invalid webmail port {port!r}")
        return port

    def smtp_uri(self, state: DesiredState) -> str:
        """Submission (STARTTLS on 587) on the tree's first SMTP node."""
        smtp = sorted(state.nodes_by_role.get("smtp") or [])
        if not smtp:
            return ""
        hostname, address = smtp[0]
        return f"tls://{_address(address or hostname)}:587"

    def allowed(self, state: DesiredState) -> list[str]:
        """Addresses that may log in: enabled, in an enabled domain, webmail allowed."""
        enabled = {d.name for d in state.domains if d.enabled}
        allowed = []
        for mailbox in state.mailboxes:
            if not (mailbox.enabled and mailbox.domain in enabled):
                continue
            if not mailbox.protocols.get("webmail"):
                continue
            if not _ADDRESS_RE.match(mailbox.email):
                raise ValueError(f"invalid mailbox address {mailbox.email!r}")
            allowed.append(mailbox.email)
        return sorted(allowed)

    def webmail_json(self, state: DesiredState) -> dict:
        webmail = state.webmail
        own = {d.name: d for d in (webmail.domains if webmail else [])}
        domains: dict[str, dict] = {}
        for domain in sorted(state.domains, key=lambda d: d.name):
            if not _DOMAIN_RE.match(domain.name):
                raise ValueError(f"invalid domain {domain.name!r}")
            if not domain.node_address:
                continue  # not placed on an IMAP node yet: nobody of it can log in
            extra = own.get(domain.name)
            domains[domain.name] = {
                "imap": imap_uri(domain.node_address),
                "product_name": _name(extra.product_name if extra else "", "webmail name"),
                "book": str(extra.book) if extra and extra.book is not None else "",
            }
        return {
            "default_product_name": _name(webmail.product_name if webmail else "", "product name"),
            "domains": domains,
        }

    def config_php(self, state: DesiredState) -> str:
        webmail = state.webmail
        key = webmail.des_key if webmail else ""
        if not _KEY_RE.match(key):
            raise ValueError("missing or invalid Roundcube des_key")
        product = _name(webmail.product_name if webmail else "", "product name") or "Webmail"
        tls_off = "['ssl' => ['verify_peer' => false, 'verify_peer_name' => false]]"
        lines = [
            "<?php",
            "// Managed by UMS: local changes are overwritten.",
            "$config = [];",
            f"$config['db_dsnw'] = {php_string('sqlite:///' + DATABASE + '?mode=0640')};",
            # The ums plugin sets the domain's IMAP node at each login; this one is never
            # used (an unknown domain is refused before Roundcube connects anywhere).
            "$config['imap_host'] = 'ssl://127.0.0.1:993';",
            # Nodes present the certificates converge gave them, self-signed until the
            # operator installs real ones; the traffic stays on the nodes' network.
            f"$config['imap_conn_options'] = {tls_off};",
            f"$config['smtp_host'] = {php_string(self.smtp_uri(state))};",
            "$config['smtp_user'] = '%u';",
            "$config['smtp_pass'] = '%p';",
            f"$config['smtp_conn_options'] = {tls_off};",
            f"$config['des_key'] = {php_string(key)};",
            f"$config['product_name'] = {php_string(product)};",
            "$config['support_url'] = '';",
            "$config['skin'] = 'elastic';",
            "$config['plugins'] = ['ums'];",
            f"$config['ums_data_dir'] = {php_string(DATA_DIR)};",
            "$config['autocomplete_addressbooks'] = ['sql', 'ums_gal'];",
            f"$config['log_dir'] = {php_string(LOG_DIR + '/')};",
            f"$config['temp_dir'] = {php_string(STATE_DIR + '/temp/')};",
            "$config['enable_installer'] = false;",
            "$config['enable_spellcheck'] = false;",
            "$config['login_rate_limit'] = 3;",
            # Behind the load balancers: they terminate TLS and say so.
            "$config['use_https'] = false;",
            "$config['proxy_whitelist'] = [];",
            "$config['session_samesite'] = 'Strict';",
            "$config['login_username_filter'] = 'email';",
            "",
        ]
        return "\n".join(lines)

    def php_fpm_conf(self) -> str:
        return "\n".join(
            [
                "; Managed by UMS: local changes are overwritten.",
                "[global]",
                f"pid = {RUN_DIR}/php-fpm.pid",
                f"error_log = {LOG_DIR}/php-fpm.log",
                "daemonize = yes",
                "",
                "[roundcube]",
                f"user = {WEB_USER}",
                f"group = {WEB_USER}",
                f"listen = {RUN_DIR}/php-fpm.sock",
                f"listen.owner = {WEB_USER}",
                f"listen.group = {WEB_USER}",
                "listen.mode = 0660",
                "pm = dynamic",
                "pm.max_children = 20",
                "pm.start_servers = 2",
                "pm.min_spare_servers = 1",
                "pm.max_spare_servers = 4",
                "clear_env = yes",
                f"env[ROUNDCUBE_CONFIG_DIR] = {ROOT}",
                "php_admin_value[upload_max_filesize] = 25M",
                "php_admin_value[post_max_size] = 30M",
                "php_admin_value[memory_limit] = 128M",
                f"php_admin_value[error_log] = {LOG_DIR}/php-errors.log",
                "php_admin_flag[log_errors] = on",
                "",
            ]
        )

    def nginx_conf(self, state: DesiredState) -> str:
        listen = str(self.port(state))
        return "\n".join(
            [
                "# Managed by UMS: local changes are overwritten.",
                f"user {WEB_USER};",
                "worker_processes auto;",
                f"pid {RUN_DIR}/nginx.pid;",
                f"error_log {LOG_DIR}/nginx-error.log;",
                "events {",
                "    worker_connections 1024;",
                "}",
                "http {",
                "    include /etc/nginx/mime.types;",
                "    default_type application/octet-stream;",
                f"    access_log {LOG_DIR}/nginx-access.log;",
                f"    client_body_temp_path {STATE_DIR}/nginx/client_body;",
                f"    proxy_temp_path {STATE_DIR}/nginx/proxy;",
                f"    fastcgi_temp_path {STATE_DIR}/nginx/fastcgi;",
                f"    uwsgi_temp_path {STATE_DIR}/nginx/uwsgi;",
                f"    scgi_temp_path {STATE_DIR}/nginx/scgi;",
                "    server_tokens off;",
                "    client_max_body_size 30m;",
                "    server {",
                f"        listen {listen} default_server;",
                "        server_name _;",
                f"        root {PUBLIC_HTML};",
                "        index index.php;",
                "        location = /index.php {",
                "            include /etc/nginx/fastcgi_params;",
                "            fastcgi_param SCRIPT_FILENAME $document_root/index.php;",
                # The load balancer terminated TLS: Roundcube must build https links.
                "            fastcgi_param HTTPS on;",
                f"            fastcgi_pass unix:{RUN_DIR}/php-fpm.sock;",
                "        }",
                # Only the front controller runs; plugin and program files are never
                # executed directly, and dot files (.htaccess) are not served.
                "        location ~ \\.php$ {",
                "            return 404;",
                "        }",
                "        location ~ /\\. {",
                "            return 404;",
                "        }",
                "        location / {",
                "            try_files $uri /index.php$is_args$args;",
                "        }",
                "    }",
                "}",
                "",
            ]
        )

    def render(self, state: DesiredState) -> list[ManagedFile]:
        """Roundcube's configuration, the plugin and its data, PHP-FPM and nginx."""
        files = [
            # des_key is a secret: readable by root and the web user only.
            ManagedFile(
                f"{ROOT}/config.inc.php", self.config_php(state).encode(), 0o640, "root", WEB_USER
            ),
            ManagedFile(f"{DATA_DIR}/php-fpm.conf", self.php_fpm_conf().encode()),
            ManagedFile(f"{DATA_DIR}/nginx.conf", self.nginx_conf(state).encode()),
            ManagedFile(
                f"{DATA_DIR}/webmail.json",
                json.dumps(self.webmail_json(state), indent=1, sort_keys=True).encode(),
            ),
            ManagedFile(
                f"{DATA_DIR}/allowed.txt", "".join(f"{a}\n" for a in self.allowed(state)).encode()
            ),
        ]
        seeds = state.webmail.totp if state.webmail else {}
        for address, seed in seeds.items():
            if not _ADDRESS_RE.match(address) or not _SEED_RE.match(seed):
                raise ValueError(f"invalid TOTP seed for {address!r}")
        # The seeds are secrets: readable by root and the web user only.
        files.append(
            ManagedFile(
                f"{DATA_DIR}/totp.json",
                json.dumps(dict(sorted(seeds.items()))).encode(),
                0o640,
                "root",
                WEB_USER,
            )
        )
        package = resources.files(__package__) / "plugin"
        for relative in PLUGIN_FILES:
            files.append(
                ManagedFile(f"{DATA_DIR}/plugin/{relative}", (package / relative).read_bytes())
            )
        books = state.webmail.books if state.webmail else {}
        for customer_id, entries in sorted(books.items()):
            clean = []
            for entry in entries:
                if not _ADDRESS_RE.match(entry["email"]):
                    raise ValueError(f"invalid address book address {entry['email']!r}")
                clean.append({k: str(entry.get(k, "")) for k in ("id", "kind", "email", "name")})
            files.append(
                ManagedFile(
                    f"{DATA_DIR}/books/{int(customer_id)}.json",
                    json.dumps(clean, ensure_ascii=False).encode(),
                )
            )
        return files

    # ------------------------------------------------------------------ prepare

    def prepare(self, conn: Connector, state: DesiredState) -> Preparation | None:
        """Plan the plugin link, the runtime folders and the database, from the facts."""
        facts = conn.run(
            ["sh", "-c", _FACTS, "sh", PLUGIN_LINK, DATABASE, RUN_DIR, LOG_DIR, STATE_DIR,
             WEB_USER, DATA_DIR]
        ).check()  # fmt: skip
        lines = facts.stdout.splitlines()
        commands: list[list[str]] = []
        missing = [line.split(" ", 1)[1] for line in lines if line.startswith("nodir ")]
        owned = [line.split(" ", 1)[1] for line in lines if line.startswith("notowned ")]
        if missing:
            commands.append(["mkdir", "-p", *missing])
        if missing or owned:
            # PHP-FPM's workers write sessions (SQLite and its journal), logs and temp
            # files there as the web user.
            commands.append(["chown", f"{WEB_USER}:{WEB_USER}", *missing, *owned])
        if f"link {DATA_DIR}/plugin" not in lines:
            commands.append(["ln", "-sfn", f"{DATA_DIR}/plugin", PLUGIN_LINK])
        if "db" not in lines:
            commands.append(["php", "-r", _INIT_DB, DATABASE, SCHEMA])
            commands.append(["chown", f"{WEB_USER}:{WEB_USER}", DATABASE])
            commands.append(["chmod", "0640", DATABASE])
        # Level-triggered: a daemon that died since the last converge is started again
        # with its live configuration (a converge with changes reloads it afterwards).
        if "down php-fpm" in lines:
            commands.append(["sh", "-c", _PHP_FPM, "sh", "-y", f"{DATA_DIR}/php-fpm.conf"])
        if "down nginx" in lines:
            commands.append(["nginx", "-c", f"{DATA_DIR}/nginx.conf"])
        return Preparation(commands=commands) if commands else None

    # ------------------------------------------------------------------ check, reload

    def validate(self, conn: Connector, staged_root: str) -> None:
        """``php -l`` on every PHP file, ``php-fpm -t`` and ``nginx -t`` on the stage."""
        stage = staged_root.rstrip("/")
        php_files = [f"{stage}/config.inc.php"] + [
            f"{stage}/ums/plugin/{relative}" for relative in PLUGIN_FILES
        ]
        for path in php_files:
            result = conn.run(["php", "-l", path])
            if not result.ok:
                raise CheckFailed(self.name, (result.stdout + result.stderr).strip())
        result = conn.run(["sh", "-c", _PHP_FPM, "sh", "-t", "-y", f"{stage}/ums/php-fpm.conf"])
        if not result.ok:
            raise CheckFailed(self.name, (result.stderr + result.stdout).strip())
        result = conn.run(["nginx", "-t", "-q", "-c", f"{stage}/ums/nginx.conf"])
        if not result.ok:
            raise CheckFailed(self.name, (result.stderr + result.stdout).strip())

    def activate(self, conn: Connector, changed: list[ManagedFile]) -> None:
        """Reload PHP-FPM (new code and configuration) and nginx; start either if down.

        Data files (allow list, domains, address books) are read at each login and need
        no reload; a reload is cheap and graceful, so any change reloads both.
        """
        fpm_conf = f"{DATA_DIR}/php-fpm.conf"
        pid = (conn.get_file(f"{RUN_DIR}/php-fpm.pid") or b"").strip().decode(errors="replace")
        if not (pid.isdigit() and conn.run(["kill", "-USR2", pid]).ok):
            conn.run(["sh", "-c", _PHP_FPM, "sh", "-y", fpm_conf]).check()
        nginx_conf = f"{DATA_DIR}/nginx.conf"
        if not conn.run(["nginx", "-s", "reload", "-c", nginx_conf]).ok:
            conn.run(["nginx", "-c", nginx_conf]).check()

    def probe(self, conn: Connector, state: DesiredState, *, strict: bool = True) -> str:
        """Roundcube's login page over the node's own nginx and PHP-FPM."""
        url = f"http://127.0.0.1:{self.port(state)}/"
        result = conn.run(
            ["curl", "-sS", "--retry", "8", "--retry-connrefused", "--retry-delay", "1",
             "-m", "10", "-o", "-", "-w", "\n%{http_code}", url],
        )  # fmt: skip
        body = result.stdout
        if not result.ok or "rcmloginuser" not in body:
            status = body.rsplit("\n", 1)[-1] if body else ""
            raise ProbeFailed(self.name, f"{url}: {status} {result.stderr.strip()}"[:500])
        return f"{url}: Roundcube login page"
