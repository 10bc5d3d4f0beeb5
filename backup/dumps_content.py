"""What a controller dump holds besides the database: keys, settings, certificates and
every node's rendered configuration.

Everything here is serialised to bytes and handed to :mod:`backup.dumps`, which encrypts
it with the backup key before anything leaves the controller. Nothing here reads mail:
node configuration is rendered from the controller's desired state (``deploy.desired``),
never fetched from a node, so a dump holds maps, userdb entries and certificates but no
message, and it works while a node is down.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from django.conf import settings

#: Settings names that hold (or may hold) a secret; never written to ``settings.json``.
_SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE", re.I)
#: Settings copied besides every ``UMS_*`` one.
_PLAIN_SETTINGS = (
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "TIME_ZONE",
    "LANGUAGE_CODE",
    "EMBEDDED_POSTGRES",
    "VAR_DIR",
    "CELERY_BEAT_SCHEDULE",
)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+):[^@/\s]+@")


def _scrub(value: Any) -> Any:
    """``value`` with secret-named keys dropped and passwords cut out of URLs."""
    if isinstance(value, dict):
        return {str(k): _scrub(v) for k, v in value.items() if not _SECRET_NAME.search(str(k))}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v) for v in value]
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1:***@", value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    return str(value)


def settings_snapshot() -> dict[str, Any]:
    """The controller's non-secret configuration (what to set again on a new controller)."""
    names = sorted(
        n for n in dir(settings) if n.isupper() and (n.startswith("UMS_") or n in _PLAIN_SETTINGS)
    )
    snapshot = {n: _scrub(getattr(settings, n)) for n in names if not _SECRET_NAME.search(n)}
    db = settings.DATABASES["default"]
    snapshot["DATABASE"] = {
        k: db.get(k) for k in ("ENGINE", "NAME", "HOST", "PORT", "USER") if db.get(k)
    }
    snapshot["CELERY_BROKER_URL"] = _scrub(getattr(settings, "CELERY_BROKER_URL", "") or "")
    return snapshot


def keys_snapshot() -> dict[str, Any]:
    """Every key the controller generated, in clear (the caller encrypts it).

    The database holds the SSH and DKIM private keys Fernet-encrypted with
    ``UMS_ENCRYPTION_KEYS``; the decrypted copies here let a dump be used even when those
    keys are lost with the controller, and the Fernet keys let the restored database be
    read as it is. The backup key itself is never in a dump (it is what opens one).
    """
    from deploy.models import ControllerKey
    from mail.models import DkimKey

    controller = [
        {
            "version": k.version,
            "private_key_pem": k.private_key_pem,
            "public_key": k.public_key,
            "fingerprint": k.fingerprint,
            "retired": k.retired_at is not None,
        }
        for k in ControllerKey.objects.order_by("version")
    ]
    dkim = [
        {
            "domain": name,
            "selector": key.selector,
            "state": key.state,
            "private_key_pem": key.private_key,
            "public_key": key.public_key,
        }
        for key, name in (
            (k, k.domain.name) for k in DkimKey.objects.select_related("domain").order_by("id")
        )
    ]
    return {
        "encryption_keys": list(settings.ENCRYPTION_KEYS),
        "django_secret_key": settings.SECRET_KEY,
        "controller_ssh_keys": controller,
        "dkim_keys": dkim,
    }


def _tar(entries: list[tuple[str, bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), mode, now
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def certificate_store() -> bytes | None:
    """The load balancers' certificate store (certificates, keys, local CA) as a tar."""
    from deploy.services.nginx.tasks import cert_directory

    root = Path(cert_directory())
    if not root.is_dir():
        return None
    entries = [
        (str(p.relative_to(root)), p.read_bytes(), p.stat().st_mode & 0o777)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    ]
    return _tar(entries)


def dumped_nodes() -> list[Any]:
    """Nodes whose configuration the controller renders (approved onwards)."""
    from deploy.desired import SERVING_STATUSES
    from servers.models import Node

    return list(Node.objects.filter(status__in=SERVING_STATUSES).order_by("id"))


def node_object_name(node: Any) -> str:
    """``nodes/<id>-<hostname>.tar`` with the hostname kept to safe characters."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", node.hostname)[:80].strip(".-") or "node"
    return f"nodes/{node.pk}-{host}.tar"


def node_configuration(node: Any) -> bytes:
    """Every file the controller renders for ``node`` (paths, modes, owners) as a tar."""
    from deploy import converge, desired

    state = desired.build(node)
    entries: list[tuple[str, bytes, int]] = []
    owners: list[dict[str, Any]] = []
    for service in converge.applicable_services(state):
        for file in converge.render(service, state):
            entries.append((file.path, file.content, file.mode))
            owners.append(
                {
                    "path": file.path,
                    "service": service.name,
                    "mode": oct(file.mode),
                    "owner": file.owner,
                    "group": file.group,
                }
            )
    index = json.dumps({"node": node.hostname, "roles": node.roles, "files": owners}, indent=1)
    entries.append(("UMS-FILES.json", index.encode(), 0o600))
    return _tar(entries)


def node_parts(
    on_error: Callable[[Any, Exception], None],
) -> Iterator[tuple[str, bytes, dict[str, Any]]]:
    """(object name, tar, manifest extras) per node; a node that fails to render is
    reported through ``on_error`` and left out (the manifest says so)."""
    for node in dumped_nodes():
        try:
            data = node_configuration(node)
        except Exception as exc:  # one bad node must not lose every dump
            on_error(node, exc)
            continue
        extras = {"kind": "node", "node": node.hostname, "roles": list(node.roles or [])}
        yield node_object_name(node), data, extras
