"""Maildir exports (issue 13, item 7): requesting one, where its file lives on the
controller, the signed download link, and the cleanup of expired ones.

Who may export: an administrator holding ``mail.view`` and the content permission, which
today is the one guarding held-message content (``spamhold.read_content``,
:data:`CONTENT_PERMISSION`): an export *is* message content. Without it the request is
refused (403) and nothing is queued.

Where it goes: to a backup target (encrypted client-side like every object there, with an
encrypted ``.sha256`` object beside it), or to ``UMS_VAR_DIR/exports/<token>.tar.enc`` on
the controller, encrypted with the backup key and mode 0600, downloadable through a
signed link until ``UMS_EXPORT_LINK_TTL`` seconds after it was made. Expired files are
deleted by the ``backup.cleanup_exports`` task (and at once when an expired link is used).

Exclusions (:mod:`backup.exclusions`) do not apply: an export is an administrator's
explicit request for this mailbox or domain, and leaving folders out of it silently
would hand over an incomplete copy.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext as _

from mail.models import Domain, Mailbox
from tenants import permissions as perms
from ums import auditing, jobs, scoping
from ums.actions import action, require_in_scope, require_permission
from ums.models import Job

from .models import BackupTarget, Export, Snapshot

EXPORT_JOB = "backup.export"
CONTENT_PERMISSION = perms.SPAMHOLD_READ_CONTENT
_SALT = "backup.export.download"


def exports_dir() -> Path:
    folder = Path(settings.VAR_DIR) / "exports"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def file_path(export: Export) -> Path:
    return exports_dir() / export.file_name


def object_name(export: Export) -> str:
    """``exports/<domain>/<mailbox or _domain>-<stamp>-<token>.tar`` (safe components)."""
    who = export.local_part or "_domain"
    stamp = export.created_at.strftime("%Y%m%dT%H%M%SZ")
    return f"exports/{export.domain_name}/{who}-{stamp}-{export.token[:16]}.tar"


def require_content_permission(actor: Any) -> None:
    require_permission(actor, perms.MAIL_VIEW)
    require_permission(actor, CONTENT_PERMISSION)


@action
def request_export(
    *,
    actor: Any,
    domain: Domain,
    mailbox: Mailbox | None = None,
    snapshot: Snapshot | None = None,
    target: BackupTarget | None = None,
) -> Export:
    """Queue an export job of ``mailbox`` (or the whole ``domain``); the Export row."""
    from deploy.models import DomainPlacement

    require_content_permission(actor)
    require_in_scope(domain, actor)
    errors: dict[str, str] = {}
    if mailbox is not None:
        require_in_scope(mailbox, actor)
        if mailbox.domain_id != domain.pk:
            errors["mailbox"] = _("This mailbox is not in the domain.")
    if target is not None:
        require_in_scope(target, actor)
    if snapshot is not None and snapshot.domain_id != domain.pk:
        errors["snapshot"] = _("This snapshot is not of the domain.")
    placement = DomainPlacement.objects.filter(domain=domain).first()
    if placement is None:
        errors["domain"] = _("This domain is not placed on an IMAP node yet: nothing to export.")
    if errors:
        raise ValidationError(errors)
    export = Export(
        token=secrets.token_hex(24),
        customer=domain.customer,
        customer_path=domain.customer_path,
        domain=domain,
        domain_name=domain.name,
        local_part=mailbox.local_part if mailbox else "",
        snapshot_name=snapshot.name if snapshot else "",
        node_id=snapshot.node_id if snapshot else placement.node_id,
        target=target,
        requested_by_name=getattr(actor, "audit_name", "") if actor is not None else "system",
    )
    export.save()
    if target is not None:
        export.object_name = object_name(export)
    else:
        export.file_name = f"{export.token}.tar.enc"
    job = jobs.enqueue(
        EXPORT_JOB,
        actor=actor,
        title=_("Maildir export of %(what)s") % {"what": str(export)},
        customer=domain.customer,
        target=export,
        params={"export_id": export.pk},
    )
    export.job = job
    export.save(update_fields=["object_name", "file_name", "job"])
    auditing.record(
        "backup.export.request",
        obj=export,
        extra={
            "job": job.pk,
            "snapshot": export.snapshot_name,
            "target": target.name if target else "",
        },
    )
    return export


# ----------------------------------------------------------------------- download link


def link_ttl() -> int:
    return int(settings.UMS_EXPORT_LINK_TTL)


def download_token(export: Export) -> str:
    return signing.TimestampSigner(salt=_SALT).sign(export.token)


def export_for_token(signed: str) -> tuple[Export | None, bool]:
    """``(export, expired)`` for a signed link; ``(None, False)`` for a forged one."""
    signer = signing.TimestampSigner(salt=_SALT)
    try:
        token = signer.unsign(signed)
    except signing.BadSignature:
        return None, False
    export = Export.objects.filter(token=token).first()
    if export is None:
        return None, False
    try:
        signer.unsign(signed, max_age=link_ttl())
    except signing.SignatureExpired:
        return export, True
    return export, is_expired(export)


def is_expired(export: Export) -> bool:
    return export.expires_at is not None and export.expires_at <= timezone.now()


def can_download(export: Export, user: Any) -> bool:
    return (
        export.status == Export.READY
        and not export.target_id
        and bool(export.file_name)
        and not is_expired(export)
        and user.has_permission(perms.MAIL_VIEW)
        and user.has_permission(CONTENT_PERMISSION)
        and scoping.in_scope(export, user)
    )


def record_download(export: Export, actor: Any) -> None:
    auditing.record(
        "backup.export.download", obj=export, actor=actor, extra={"sha256": export.sha256}
    )


def delete_file(export: Export) -> None:
    if export.file_name:
        (exports_dir() / export.file_name).unlink(missing_ok=True)
        (exports_dir() / f"{export.file_name}.part").unlink(missing_ok=True)


def discard(export: Export) -> bool:
    """Delete everything the export wrote; False when its target row is gone (the object
    can no longer be reached)."""
    from . import drivers

    delete_file(export)
    if not export.object_name:
        return True
    if not export.target_id:
        return False
    driver = drivers.driver_for(export.target)
    try:
        driver.delete(export.object_name)
        driver.delete(f"{export.object_name}.sha256")
    finally:
        driver.close()
    return True


def expire(export: Export) -> None:
    """Delete the controller file of an expired export; the row stays as the record."""
    delete_file(export)
    Export.objects.filter(pk=export.pk, status=Export.READY).update(status=Export.EXPIRED)


def cleanup(now: Any = None) -> int:
    """Expire every controller export past its time; how many were expired."""
    now = now or timezone.now()
    expired = list(
        Export.objects.filter(status=Export.READY, target__isnull=True, expires_at__lte=now)
    )
    for export in expired:
        expire(export)
    # A job given up after its attempts (see ums.jobs) leaves its export unfinished.
    Export.objects.filter(
        status__in=(Export.PENDING, Export.RUNNING), job__status=Job.FAILED
    ).update(status=Export.FAILED, error="The export job failed; see its log.")
    return len(expired)


def write_private(path: Path, chunks: Any) -> int:
    """Write ``chunks`` to ``path`` (mode 0600) through a ``.part`` file and a rename."""
    part = path.with_name(path.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    written = 0
    with os.fdopen(fd, "wb") as handle:
        for piece in chunks:
            handle.write(piece)
            written += len(piece)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(part, path)
    return written
