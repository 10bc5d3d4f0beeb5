"""A real SAML identity provider for the tests: Debian's SimpleSAMLphp (1.19) run by PHP's
own web server behind nginx for TLS (the portal accepts https:// IdPs only), with a private
configuration directory (SIMPLESAMLPHP_CONFIG_DIR).

Its users live in an ``exampleauth:UserPass`` source; it signs with a throwaway key. The
service provider it knows is given by entity id and assertion consumer URL, as an operator
would register the portal's metadata.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.identity.saml_idp import IdpKey, make_key

WWW = Path("/usr/share/simplesamlphp/www")
DEFAULT_CONFIG = Path("/etc/simplesamlphp/config.php")
PHP = shutil.which("php") or "/usr/bin/php"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
NAMEID_EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"


@dataclass
class SimpleSamlIdp:
    base: str
    entity_id: str
    sso_url: str
    key: IdpKey
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _php(value: object) -> str:
    """A PHP literal for strings, lists and dicts (JSON is close enough once decoded)."""
    return f"json_decode({json.dumps(json.dumps(value))}, true)"


def _write_config(root: Path, base: str, key: IdpKey, users: dict, sp: dict) -> str:
    (root / "config").mkdir()
    (root / "metadata").mkdir()
    (root / "cert").mkdir()
    for sub in ("log", "data", "tmp", "sessions"):
        (root / sub).mkdir()
    (root / "cert" / "idp.key").write_text(key.key_pem)
    (root / "cert" / "idp.crt").write_text(key.cert_pem)
    overrides = {
        "baseurlpath": f"{base}/",
        "certdir": f"{root}/cert/",
        "loggingdir": f"{root}/log/",
        "datadir": f"{root}/data/",
        "tempdir": f"{root}/tmp",
        "metadatadir": f"{root}/metadata/",
        "logging.handler": "file",
        "logging.level": 7,
        "secretsalt": secrets.token_hex(16),
        "auth.adminpassword": secrets.token_hex(16),
        "enable.saml20-idp": True,
        "session.cookie.secure": True,
        "session.phpsession.savepath": f"{root}/sessions",
        "module.enable": {"exampleauth": True, "core": True, "saml": True},
    }
    (root / "config" / "config.php").write_text(
        "<?php\n"
        f"require '{DEFAULT_CONFIG}';\n"
        f"$config = array_replace($config, {_php(overrides)});\n"
    )
    (root / "config" / "authsources.php").write_text(
        "<?php\n"
        "$config = ['admin' => ['core:AdminPassword'],\n"
        f"  'ums-users' => array_merge(['exampleauth:UserPass'], {_php(users)})];\n"
    )
    entity_id = f"{base}/saml2/idp/metadata.php"
    idp = {
        "host": "__DEFAULT__",
        "privatekey": "idp.key",
        "certificate": "idp.crt",
        "auth": "ums-users",
        "signature.algorithm": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    }
    (root / "metadata" / "saml20-idp-hosted.php").write_text(
        f"<?php\n$metadata[{json.dumps(entity_id)}] = {_php(idp)};\n"
    )
    remote = {
        "AssertionConsumerService": sp["acs"],
        "NameIDFormat": NAMEID_EMAIL,
        "simplesaml.nameidattribute": "email",
        "simplesaml.attributes": True,
    }
    (root / "metadata" / "saml20-sp-remote.php").write_text(
        f"<?php\n$metadata[{json.dumps(sp['entity_id'])}] = {_php(remote)};\n"
    )
    return entity_id


def _nginx_conf(root: Path, port: int, php_port: int) -> Path:
    tls = make_key("127.0.0.1")
    (root / "tls.key").write_text(tls.key_pem)
    (root / "tls.crt").write_text(tls.cert_pem)
    conf = root / "nginx.conf"
    temp = " ".join(
        f"{name}_temp_path {root}/tmp/{name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(
        f"""
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/log/nginx-error.log;
events {{ worker_connections 64; }}
http {{
    access_log {root}/log/nginx-access.log;
    {temp}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {root}/tls.crt;
        ssl_certificate_key {root}/tls.key;
        location / {{
            proxy_pass http://127.0.0.1:{php_port};
            proxy_set_header Host $http_host;
        }}
    }}
}}
"""
    )
    return conf


def _wait_for_metadata(url: str, servers: list[subprocess.Popen], log: Path) -> None:
    unverified = ssl._create_unverified_context()  # noqa: S323 (the test's own certificate)
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5, context=unverified) as answer:  # noqa: S310
                if b"EntityDescriptor" in answer.read():
                    return
                raise RuntimeError(f"SimpleSAMLphp answers with an error, see {log}")
        except OSError:
            if any(s.poll() is not None for s in servers) or time.monotonic() > deadline:
                raise RuntimeError(f"SimpleSAMLphp did not start, see {log}") from None
            time.sleep(0.2)


@contextmanager
def running_idp(
    tmp: Path, *, users: dict, sp_entity_id: str, sp_acs: str
) -> Iterator[SimpleSamlIdp]:
    """SimpleSAMLphp on https://127.0.0.1:<free port> for as long as the block runs.

    ``users`` maps ``"name:password"`` to its attributes (``{"email": ["..."], ...}``).
    """
    if not WWW.is_dir() or not Path(PHP).exists() or not Path(NGINX).exists():
        raise RuntimeError("SimpleSAMLphp is missing: run scripts/install-test-packages.sh")
    port, php_port = _free_port(), _free_port()
    base = f"https://127.0.0.1:{port}"
    key = make_key("SimpleSAMLphp test IdP")
    entity_id = _write_config(tmp, base, key, users, {"entity_id": sp_entity_id, "acs": sp_acs})
    env = {**os.environ, "SIMPLESAMLPHP_CONFIG_DIR": str(tmp / "config")}
    log = tmp / "log"
    servers: list[subprocess.Popen] = []
    try:
        with (log / "php-server.log").open("wb") as out:
            servers.append(
                subprocess.Popen(
                    [PHP, "-S", f"127.0.0.1:{php_port}", "-t", str(WWW)],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        conf = _nginx_conf(tmp, port, php_port)
        servers.append(subprocess.Popen([NGINX, "-c", str(conf), "-g", "daemon off;"]))
        _wait_for_metadata(entity_id, servers, log)
        yield SimpleSamlIdp(
            base=base,
            entity_id=entity_id,
            sso_url=f"{base}/saml2/idp/SSOService.php",
            key=key,
            log=log,
        )
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)
