"""Activating the plain passwords of a CSV import after it committed (issue 19).

Hashing 90,000 SHA512-CRYPT passwords costs ~240 CPU-seconds, so the import job no longer
waits for it: it writes its mailboxes with :data:`mail.passwords.PENDING_HASH` (mail is
delivered at once, no login works yet) and each plaintext Fernet-encrypted in
:class:`mail.models.PendingPassword`, all in its one transaction. Then one activation job
per import (``mail.activate_passwords``) hashes them in batches on every core; each batch
commits the hashes, deletes those pending rows and announces the change (the nodes of the
affected domains converge and render the hashes) in ONE transaction. A worker killed
mid-batch loses nothing: the rows stay pending until their hash commits.

Level-triggered: the job is queued at the import's commit, and the ``mail.passwords``
reconciler queues it again for any import that still has pending rows and no job pending
or running (a job that failed waits :data:`RETRY_AFTER` before the next). A set-password
deletes the mailbox's pending row (the new password wins); deleting the mailbox deletes it.
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from ums import crypto, jobs
from ums.models import Job

from . import passwords
from .models import CsvImport, PendingPassword
from .signals import announce

JOB_KIND = "mail.activate_passwords"
#: Passwords hashed per transaction: ~2.4 s of CPU per 1,000, so a batch commits every
#: few seconds on two cores and a killed worker redoes at most one batch.
BATCH = 2000
#: After a failed activation job, the reconciler waits this long before queueing another.
RETRY_AFTER = datetime.timedelta(minutes=5)
# pg_advisory_xact_lock class id: queueing is serialised per import (import commit vs
# reconciler), so an import never gets two activation jobs at once.
_LOCK_CLASS = 0x19A5


def encrypt_all(plain: list[str]) -> list[str]:
    """The Fernet tokens to store (computed before the import's transaction opens)."""
    return [crypto.encrypt(secret) for secret in plain]


def hold(emails: list[str], tokens: list[str], *, upload_id: int | None) -> int:
    """Store the encrypted passwords of the just-inserted mailboxes ``emails`` (inside the
    import's transaction: the import's COPY gives no ids, the join on the unique address
    does, in one statement)."""
    if not emails:
        return 0
    table = connection.ops.quote_name(PendingPassword._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (mailbox_id, upload_id, secret, created_at) "  # noqa: S608
            "SELECT m.id, %s, v.secret, %s FROM unnest(%s::text[], %s::text[]) "
            "AS v(email, secret) JOIN mail_mailbox m ON m.email = v.email",
            [upload_id, timezone.now(), emails, tokens],
        )
        return cursor.rowcount


def _pending(upload_id: int | None) -> Any:
    rows = PendingPassword.objects.all()
    if upload_id is None:
        return rows.filter(upload__isnull=True)
    return rows.filter(upload_id=upload_id)


def start(upload_id: int | None, *, actor: Any = None) -> Job | None:
    """Queue the activation job of an import unless one is pending or running, or one
    failed less than :data:`RETRY_AFTER` ago. Must run inside a transaction; the job is
    dispatched after its commit."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_CLASS, upload_id or 0])
    key = "" if upload_id is None else str(upload_id)
    earlier = Job.objects.filter(kind=JOB_KIND, object_type="mail.csvimport", object_id=key)
    if earlier.filter(status__in=(Job.PENDING, Job.RUNNING)).exists():
        return None
    if earlier.filter(status=Job.FAILED, finished_at__gt=timezone.now() - RETRY_AFTER).exists():
        return None
    remaining = _pending(upload_id).count()
    if not remaining:
        return None
    upload = CsvImport.objects.select_related("customer").filter(pk=upload_id).first()
    if actor is None and upload is not None and upload.requested_by_id is not None:
        actor = get_user_model().objects.filter(pk=upload.requested_by_id).first()
    job = jobs.enqueue(
        JOB_KIND,
        actor=actor,
        title=_("Activate %(n)d imported passwords") % {"n": remaining},
        customer=upload.customer if upload is not None else None,
        customer_path=None if upload is not None else "/",
        params={"import_id": upload_id},
        total=remaining,
    )
    # The import as target (enqueue's ``target`` needs an instance; it may be gone).
    Job.objects.filter(pk=job.pk).update(object_type="mail.csvimport", object_id=key)
    return job


def activate(job: Job, reporter: jobs.Reporter) -> dict[str, int]:
    """Hash every pending password of the job's import, batch by batch."""
    upload_id = job.params.get("import_id")
    remaining = _pending(upload_id).count()
    total = max(job.progress_total or 0, remaining)
    done = total - remaining
    activated = 0
    reporter.progress(done, total)
    while True:
        batch = list(
            _pending(upload_id).order_by("mailbox_id").values_list("mailbox_id", "secret")[:BATCH]
        )
        if not batch:
            break
        ids = [pk for pk, _secret in batch]
        hashes = passwords.hash_many([secret for _pk, secret in batch])
        stored = _store(ids, hashes)
        activated += stored
        done = min(total, done + len(batch))
        reporter.progress(done, total)
    reporter.say(gettext_noop("%(count)s passwords activated"), count=activated)
    return {"activated": activated}


def _store(ids: list[int], hashes: list[str]) -> int:
    """One batch, one transaction: the hashes of the mailboxes still pending, their pending
    rows deleted, the nodes told. Mailbox rows are locked first, as a set-password does,
    so the two never wait for each other in opposite order."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM mail_mailbox WHERE id = ANY(%s) ORDER BY id FOR UPDATE", [ids]
        )
        cursor.execute(
            "DELETE FROM mail_pendingpassword WHERE mailbox_id = ANY(%s) RETURNING mailbox_id",
            [ids],
        )
        still = {pk for (pk,) in cursor.fetchall()}
        keep = [(pk, h) for pk, h in zip(ids, hashes, strict=True) if pk in still]
        if not keep:
            return 0
        cursor.execute(
            "UPDATE mail_mailbox AS m SET password_hash = v.hash, updated_at = %s "
            "FROM unnest(%s::bigint[], %s::text[]) AS v(id, hash) "
            "WHERE m.id = v.id AND m.password_hash = %s "
            "RETURNING m.customer_path, m.domain_id",
            [
                timezone.now(),
                [pk for pk, _h in keep],
                [h for _pk, h in keep],
                passwords.PENDING_HASH,
            ],
        )
        stored = cursor.rowcount
        touched: dict[str, set[int]] = defaultdict(set)
        for path, domain_id in cursor.fetchall():
            touched[path].add(domain_id)
        # The same intent a set-password writes, once per customer for the whole batch.
        for path, domain_ids in touched.items():
            announce(path, domain_ids, kind="mailbox")
        return stored


def reconcile_pending() -> dict[str, Any]:
    """Queue an activation job for each import that has pending passwords and none running
    (the quiet pass is one index probe)."""
    if not PendingPassword.objects.exists():
        return {}
    started = []
    uploads = list(PendingPassword.objects.values_list("upload_id", flat=True).distinct())
    for upload_id in uploads:
        with transaction.atomic():
            job = start(upload_id)
        if job is not None:
            started.append(job.pk)
    return {"started": started} if started else {}
