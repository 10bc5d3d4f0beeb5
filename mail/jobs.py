"""Job handlers of the mail app (registered when ``ums.jobs.load_handlers`` imports this)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.utils.translation import gettext_noop

from ums import jobs
from ums.models import Job

from . import actions, activation, csv_import, dkim_dns
from .models import CsvImport, DkimKey


@jobs.handler(csv_import.JOB_KIND)
def run_csv_import(job: Job, reporter: jobs.Reporter) -> dict[str, Any]:
    """Apply a stored CSV upload: every row in one transaction, or nothing."""
    upload = CsvImport.objects.filter(pk=job.params.get("import_id")).first()
    if upload is None or upload.status != CsvImport.PENDING:
        raise jobs.PermanentJobError("the upload is gone or was already applied")
    actor = None
    if upload.requested_by_id is not None:
        actor = get_user_model().objects.filter(pk=upload.requested_by_id).first()
        if actor is None or not actor.is_active:
            CsvImport.objects.filter(pk=upload.pk).update(payload="", status=CsvImport.FAILED)
            raise jobs.PermanentJobError("the administrator who asked no longer exists")
    try:
        result = csv_import.apply_import(upload, actor=actor, reporter=reporter)
    except Exception:
        CsvImport.objects.filter(pk=upload.pk).update(payload="", status=CsvImport.FAILED)
        raise
    reporter.say(
        gettext_noop("imported %(mailboxes)s mailboxes and %(aliases)s aliases"),
        mailboxes=result["mailboxes"],
        aliases=result["aliases"],
    )
    if result.get("passwords_pending"):
        reporter.say(
            gettext_noop("%(mailboxes)s mailboxes created; passwords being activated"),
            mailboxes=result["mailboxes"],
        )
    return result


@jobs.handler(activation.JOB_KIND)
def run_password_activation(job: Job, reporter: jobs.Reporter) -> dict[str, Any]:
    """Hash an import's pending passwords; safe to run again (each batch commits alone)."""
    return activation.activate(job, reporter)


@jobs.handler(actions.DKIM_DNS_JOB)
def run_dkim_dns_check(job: Job, reporter: jobs.Reporter) -> dict[str, Any]:
    """Look up every key of the domain; safe to run again (it only reads DNS and stores)."""
    keys = list(
        DkimKey.objects.filter(domain_id=job.params.get("domain_id"))
        .select_related("domain")
        .order_by("created_at")
    )
    using = dkim_dns.resolver()
    results = {}
    for key in keys:
        finding = dkim_dns.check(key.selector, key.domain.name, key.public_key, using=using)
        actions.record_dkim_dns(actor=None, key=key, status=finding.status, detail=finding.detail)
        reporter.say(
            gettext_noop("%(selector)s: %(status)s (%(detail)s)"),
            selector=key.selector,
            status=finding.status,
            detail=finding.detail,
        )
        results[key.selector] = finding.status
    return {"keys": results}
