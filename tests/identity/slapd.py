"""A real OpenLDAP server for the tests: slapd with back_mdb, LDAPS and StartTLS on loopback.

Its certificate is issued by a throwaway CA for the IP address 127.0.0.1 (libldap checks the
URL's host against the certificate's subjectAltName, and rewrites "localhost"). The data is
loaded with slapadd; users have salted-SHA passwords from slappasswd. ``stop()`` and
``start()`` let a test take the directory down and bring it back.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SUFFIX = "dc=corp,dc=example"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "root-secret-pw"
BIND_DN = f"cn=reader,{SUFFIX}"
BIND_PASSWORD = "Reader-Password-1"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
ADMINS_GROUP = f"cn=ums-admins,{GROUPS}"
VIEWERS_GROUP = f"cn=ums-viewers,{GROUPS}"
USERS = {
    "alice": ("Alice Liddell", "Wonderland-Rabbit-7"),
    "bob": ("Bob Builder", "Can-We-Fix-It-42"),
}
SCHEMAS = ["core", "cosine", "inetorgperson", "nis"]
ADMIN_CODES = ["customers.view", "customers.manage", "administrators.view"]
VIEWER_CODES = ["audit.view", "mail.view"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(tz=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    now = datetime.datetime.now(tz=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _hash_password(password: str) -> str:
    return subprocess.run(
        ["slappasswd", "-s", password], check=True, capture_output=True, text=True
    ).stdout.strip()


class Slapd:
    def __init__(self) -> None:
        # Not under pytest's tmp_path: slapd runs as the openldap user, which must be able
        # to reach its files (pytest's folders are private to root).
        self.root = Path(tempfile.mkdtemp(prefix="ums-slapd-"))
        self.root.chmod(0o755)
        self.ldap_port = free_port()
        self.ldaps_port = free_port()
        ca_key, self.ca_cert = make_ca("UMS test directory CA")
        server_key, server_cert = make_server_cert(ca_key, self.ca_cert)
        self.ca_pem = self.ca_cert.public_bytes(serialization.Encoding.PEM).decode()
        (self.root / "ca.pem").write_text(self.ca_pem)
        (self.root / "server.pem").write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
        (self.root / "server.key").write_bytes(_pem_key(server_key))
        (self.root / "db").mkdir()
        self.process: subprocess.Popen | None = None
        self._configure()
        self._load()

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def ldap_url(self) -> str:
        return f"ldap://127.0.0.1:{self.ldap_port}"

    def _configure(self) -> None:
        includes = "\n".join(f"include /etc/ldap/schema/{name}.schema" for name in SCHEMAS)
        (self.root / "slapd.conf").write_text(
            f"""{includes}
pidfile {self.root}/slapd.pid
argsfile {self.root}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile {self.root}/ca.pem
TLSCertificateFile {self.root}/server.pem
TLSCertificateKeyFile {self.root}/server.key
database mdb
maxsize 16777216
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {_hash_password(ROOT_PASSWORD)}
directory {self.root}/db
access to attrs=userPassword
    by self read
    by anonymous auth
    by * none
access to *
    by dn.exact="{BIND_DN}" read
    by self read
    by anonymous auth
    by * none
"""
        )

    def _entries(self) -> str:
        blocks = [
            f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: corp\no: Corp",
            f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people",
            f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups",
            f"dn: {BIND_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
            f"cn: reader\nuserPassword: {_hash_password(BIND_PASSWORD)}",
        ]
        for uid, (name, password) in USERS.items():
            surname = name.split()[-1]
            blocks.append(
                f"dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {name}\n"
                f"sn: {surname}\nmail: {uid}@corp.example\n"
                f"userPassword: {_hash_password(password)}"
            )
        blocks.append(
            f"dn: {ADMINS_GROUP}\nobjectClass: groupOfNames\ncn: ums-admins\n"
            f"member: uid=alice,{PEOPLE}"
        )
        blocks.append(
            f"dn: {VIEWERS_GROUP}\nobjectClass: groupOfNames\ncn: ums-viewers\n"
            f"member: uid=alice,{PEOPLE}\nmember: uid=bob,{PEOPLE}"
        )
        return "\n\n".join(blocks) + "\n"

    def _load(self) -> None:
        ldif = self.root / "data.ldif"
        ldif.write_text(self._entries())
        subprocess.run(
            ["slapadd", "-f", str(self.root / "slapd.conf"), "-l", str(ldif)],
            check=True,
            capture_output=True,
        )
        openldap = pwd.getpwnam("openldap")
        for path in [self.root, *self.root.rglob("*")]:
            os.chown(path, openldap.pw_uid, openldap.pw_gid)
        (self.root / "server.key").chmod(0o600)

    def start(self) -> None:
        urls = f"{self.ldap_url}/ {self.ldaps_url}/"
        log = open(self.root / "slapd.log", "ab")  # noqa: SIM115  (kept open for the process)
        self.process = subprocess.Popen(
            [
                "slapd",
                "-f",
                str(self.root / "slapd.conf"),
                "-h",
                urls,
                "-u",
                "openldap",
                "-g",
                "openldap",
                "-d",
                "0",
            ],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    "slapd exited: " + (self.root / "slapd.log").read_text(errors="replace")
                )
            try:
                with socket.create_connection(("127.0.0.1", self.ldaps_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("slapd did not start listening")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def modify(self, ldif: str) -> None:
        """Change the directory the way its administrators would: ldapmodify over LDAPS."""
        result = subprocess.run(
            [
                "ldapmodify",
                "-H",
                self.ldaps_url,
                "-x",
                "-D",
                ROOT_DN,
                "-w",
                ROOT_PASSWORD,
            ],
            input=ldif,
            text=True,
            capture_output=True,
            env={**os.environ, "LDAPTLS_CACERT": str(self.root / "ca.pem")},
        )
        if result.returncode != 0:
            raise RuntimeError(f"ldapmodify failed: {result.stderr.strip()}")

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def configure_directory(cast: Any, server: Slapd, **overrides: Any) -> Any:
    """The Ministry's directory: this server over LDAPS, users as name@corp.example."""
    from tenants import identity_actions

    values = {
        "server_uri": server.ldaps_url,
        "ca_certificate": server.ca_pem,
        "bind_dn": BIND_DN,
        "bind_password": BIND_PASSWORD,
        "user_search_base": PEOPLE,
        "user_search_filter": "(uid=%(user)s)",
        "group_search_base": GROUPS,
        "group_permissions": [
            {"group": ADMINS_GROUP, "permissions": ADMIN_CODES},
            {"group": VIEWERS_GROUP, "permissions": VIEWER_CODES},
        ],
        "login_domains": ["corp.example"],
        **overrides,
    }
    return identity_actions.save_ldap_directory(
        actor=cast.sub_admin, customer=cast.ministry, **values
    )
