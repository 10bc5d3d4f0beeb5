"""The restore drill: rebuild the controller's database from a dump into an empty
database and prove it sound (``manage.py restore_drill``).

Steps, each of which stops the drill with a sentence saying what failed:

1. read the dump's manifest on the target (a dump without one was cut short);
2. download every object and check its sha256 and size against the manifest;
3. decrypt the keys and settings with the backup key;
4. refuse a database that is not empty, then ``pg_restore`` the database into it (a
   ``pg_restore`` at least as new as the dump's ``pg_dump`` and the server);
5. check the dump's encryption keys open the restored secrets (controller SSH keys);
6. run ``manage.py audit_verify`` against the restored database.

Only ciphertext is written to the local scratch folder; the database archive is decrypted
straight into ``pg_restore``'s input.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

from . import crypto, dumps, dumps_pg
from .drivers import Target, TargetError

_SCRATCH_READ = 1024 * 1024
_USER_RELATIONS = """
    SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%'
"""


class DrillFailed(Exception):
    """A step of the drill failed; the message says which and why."""


@dataclass
class DrillReport:
    dump: str = ""
    objects: int = 0
    bytes: int = 0
    lines: list[str] = field(default_factory=list)


def choose_dump(driver: Target, name: str | None) -> tuple[str, dict[str, Any]]:
    listing = dumps.read_listing(driver)
    if name:
        if name in listing.partial:
            raise DrillFailed(f"dump {name} has no manifest: it was cut short and is unusable")
        if name in listing.unreadable:
            raise DrillFailed(f"the manifest of {name} cannot be read: {listing.unreadable[name]}")
        if name not in listing.complete:
            raise DrillFailed(f"dump {name} is not on this target")
        return name, listing.complete[name]
    if not listing.complete:
        raise DrillFailed("this target holds no complete dump")
    newest = max(listing.complete, key=lambda n: listing.complete[n].get("created_at", ""))
    return newest, listing.complete[newest]


def _decrypt_file(path: Path) -> bytes:
    return crypto.decrypt_bytes(path.read_bytes())


def _check_empty(url: str) -> int:
    """The server's major version; :class:`DrillFailed` when the database holds anything."""
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            (count,) = conn.execute(_USER_RELATIONS).fetchone()
            version = int(conn.execute("SHOW server_version_num").fetchone()[0])
    except psycopg.Error as exc:
        raise DrillFailed(f"cannot connect to the drill database: {exc}") from exc
    if count:
        raise DrillFailed(
            f"the drill database is not empty ({count} tables, sequences or views): "
            "the drill only restores into an empty database"
        )
    return dumps_pg.server_major(version)


def _restore(url: str, archive: Path, server: int, dumped_with: str) -> str:
    dump_major = int((dumped_with or "0").split(".")[0] or 0)
    tool, version = dumps_pg.find_tool("pg_restore", max(server, dump_major))
    cmd = [
        str(tool),
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--single-transaction",
        f"--dbname={url}",
    ]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=err, stdout=err)
        assert proc.stdin is not None
        try:
            with open(archive, "rb") as handle:
                source = iter(lambda: handle.read(_SCRATCH_READ), b"")
                for plain in crypto.decrypt_stream(source):
                    proc.stdin.write(plain)
        except BrokenPipeError:
            pass
        except crypto.DecryptionError as exc:
            proc.kill()
            raise DrillFailed(f"database.pgdump does not decrypt: {exc}") from exc
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        code = proc.wait()
        err.seek(0)
        output = err.read().decode(errors="replace").strip()
    if code != 0:
        raise DrillFailed(f"pg_restore {version} failed: {output[-2000:]}")
    return version


def _check_keys(url: str, keys: dict[str, Any]) -> int:
    """How many controller SSH keys in the restored database the dump's keys open."""
    from deploy.models import ControllerKey

    try:
        fernet = MultiFernet([Fernet(k.encode()) for k in keys.get("encryption_keys", [])])
    except (ValueError, TypeError) as exc:
        raise DrillFailed(f"keys.json holds no usable encryption key: {exc}") from exc
    table = ControllerKey._meta.db_table
    with psycopg.connect(url, connect_timeout=10) as conn:
        rows = conn.execute(
            f'SELECT version, private_key_pem FROM "{table}" ORDER BY version'  # noqa: S608
        ).fetchall()
    dumped = {k["version"]: k["private_key_pem"] for k in keys.get("controller_ssh_keys", [])}
    for version, token in rows:
        try:
            pem = fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise DrillFailed(
                f"the dump's encryption keys do not open controller key v{version}"
            ) from exc
        if dumped.get(version) != pem:
            raise DrillFailed(f"keys.json and the database disagree on controller key v{version}")
    return len(rows)


def _audit_verify(url: str, keys: dict[str, Any]) -> str:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "UMS_ENCRYPTION_KEYS": ",".join(keys.get("encryption_keys", [])),
    }
    manage = Path(settings.BASE_DIR) / "manage.py"
    proc = subprocess.run(
        [sys.executable, str(manage), "audit_verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise DrillFailed(f"audit_verify failed on the restored database: {output[-2000:]}")
    return output


def run(
    driver: Target, url: str, *, dump: str | None = None, say: Callable[[str], None] = print
) -> DrillReport:
    """The whole drill against ``driver``; raises :class:`DrillFailed` at the first failure."""
    report = DrillReport()
    try:
        name, manifest = choose_dump(driver, dump)
    except TargetError as exc:
        raise DrillFailed(f"cannot read the target: {exc}") from exc
    report.dump = name
    say(f"Dump {name} ({manifest.get('created_at')}, {len(manifest['objects'])} objects)")
    wanted = crypto.key_id(crypto.key_bytes()).hex()
    if manifest.get("backup_key_id") not in (None, wanted):
        raise DrillFailed("the dump was made with another backup key than this controller's")
    with tempfile.TemporaryDirectory(prefix="ums-drill-") as scratch:
        files: dict[str, Path] = {}
        for index, entry in enumerate(manifest["objects"]):
            path = Path(scratch) / f"{index:05d}.enc"
            with open(path, "wb") as sink:
                problem = dumps.check_object(driver, name, entry, sink)
            if problem:
                raise DrillFailed(problem)
            files[entry["name"]] = path
            report.objects += 1
            report.bytes += entry["size"]
        say(f"Checksums: all {report.objects} objects match the manifest ({report.bytes} bytes)")
        try:
            keys = json.loads(_decrypt_file(files["keys.json"]))
            json.loads(_decrypt_file(files["settings.json"]))
        except KeyError as exc:
            raise DrillFailed(f"the dump lacks {exc.args[0]}") from exc
        except (crypto.DecryptionError, ValueError) as exc:
            raise DrillFailed(f"keys or settings do not decrypt: {exc}") from exc
        server = _check_empty(url)
        if "database.pgdump" not in files:
            raise DrillFailed("the dump lacks database.pgdump")
        pg_dump_version = (manifest.get("postgres") or {}).get("pg_dump", "")
        version = _restore(url, files["database.pgdump"], server, pg_dump_version)
        say(f"Restored the database with pg_restore {version} (dumped with {pg_dump_version})")
    count = _check_keys(url, keys)
    say(f"Keys: the dump's encryption keys open all {count} controller SSH keys")
    say(_audit_verify(url, keys))
    return report
