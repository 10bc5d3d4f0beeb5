"""A finished CSV import: the ISP administrator imports Garage Pty's mailboxes and aliases
through the real import (dry run, stored upload, one job), so the jobs page shows it."""

from __future__ import annotations

import csv
import io

from django.core.exceptions import ValidationError

from mail import csv_import
from mail.models import CsvImport, Domain

from .catalogue import CSV_ALIASES, CSV_DOMAIN, CSV_MAILBOXES
from .mailboxes import ascii_name, mailbox_password
from .tree import People


def csv_text(domain: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["type", "address", "display_name", "password", "quota_mb", "targets"])
    for local, display_name, quota in CSV_MAILBOXES:
        writer.writerow(
            ["mailbox", f"{local}@{domain}", display_name, mailbox_password(local), quota, ""]
        )
    for local, kind, targets in CSV_ALIASES:
        members = " ".join(f"{t}@{domain}" for t in targets.split())
        writer.writerow([kind, f"{local}@{domain}", "", "", "", members])
    return out.getvalue()


def request_import(people: People) -> int | None:
    """Start the demo import unless the domain has had one; the id of the job started."""
    domain = Domain.objects.filter(name=ascii_name(CSV_DOMAIN)).first()
    if domain is None or CsvImport.objects.filter(domain=domain).exists():
        return None
    upload, report = csv_import.request_import(
        actor=people.actor("isp.admin"), data=csv_text(domain.name), domain=domain
    )
    if upload is None:
        raise ValidationError(f"the demo CSV was refused: {report['errors']}")
    return upload.job_id
