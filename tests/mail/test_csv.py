"""CSV import (dry run lists every row's errors; apply is one job, all or nothing) and export."""

from __future__ import annotations

import csv
import io

import pytest
from django.urls import reverse

from audit.models import AuditRecord
from mail import csv_import, passwords
from mail.models import Alias, CsvImport, Mailbox
from tenants import limit_actions
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain, make_mailbox
from ums.models import Job

GOOD = (
    "type,address,display_name,password,quota_mb,targets,enabled\n"
    "mailbox,anna@ministry.example,Anna,Birch-Canyon-Delta-31,500,,true\n"
    "mailbox,ben@ministry.example,Ben,Ember-Forest-Glade-62,,,\n"
    "group,team@ministry.example,Team,,,anna@ministry.example ben@ministry.example,\n"
    "alias,sales@ministry.example,,,,anna@ministry.example,\n"
)


@pytest.mark.django_db
def test_dry_run_lists_every_bad_row_and_writes_nothing(cast: Cast) -> None:
    domain = make_domain(cast.ministry, "ministry.example")
    make_mailbox(domain, "taken")
    make_domain(cast.shop, "shop.example")
    data = (
        "type,address,password,targets\n"
        "mailbox,ok@ministry.example,Birch-Canyon-Delta-31,\n"
        "mailbox,bad name@ministry.example,Birch-Canyon-Delta-31,\n"
        "mailbox,weak@ministry.example,123,\n"
        "mailbox,taken@ministry.example,Birch-Canyon-Delta-31,\n"
        "mailbox,dup@ministry.example,Birch-Canyon-Delta-31,\n"
        "alias,dup@ministry.example,,x@example.org\n"
        "alias,nobody@ministry.example,,\n"
        "mailbox,x@shop.example,Birch-Canyon-Delta-31,\n"
        "robot,y@ministry.example,,\n"
        'mailbox,z@ministry.example,=HYPERLINK("x")\tA1,\n'
    )
    before = (Mailbox.objects.count(), Alias.objects.count(), AuditRecord.objects.count())
    report = csv_import.dry_run(data, actor=cast.sub_admin)
    assert not report["valid"]
    rows = {e["row"]: e["errors"] for e in report["errors"]}
    # Row 1 is the header; row 2 is fine.
    assert set(rows) == {3, 4, 5, 6, 7, 8, 9, 10, 11}
    assert "address" in rows[3] and "password" in rows[4] and "already exists" in str(rows[5])
    assert "more than once" in str(rows[6]) and "more than once" in str(rows[7])
    assert "targets" in rows[8] and "No such domain" in str(rows[9]) and "type" in rows[10]
    assert "password" in rows[11]
    assert (Mailbox.objects.count(), Alias.objects.count(), AuditRecord.objects.count()) == before


@pytest.mark.django_db
def test_apply_with_bad_rows_changes_nothing_through_the_api(cast: Cast) -> None:
    make_domain(cast.ministry, "ministry.example")
    client = token_client(cast.sub_admin)
    data = GOOD + "mailbox,broken@ministry.example,,weak,,,\n"
    response = client.post(
        reverse("mail-import-list"), {"csv": data, "dryRun": False}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["report"]["errorCount"] == 1
    assert not Mailbox.objects.filter(email="anna@ministry.example").exists()
    assert not CsvImport.objects.exists() and not Job.objects.exists()


@pytest.mark.django_db
def test_bad_files_are_clear_400s(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    for payload in (
        {"csv": "nothing,useful\n1,2\n", "dryRun": True},
        {"csv": "", "dryRun": True},
        {"csv": "type,address\x00\n", "dryRun": True},
        {"csv": ["type,address"], "dryRun": True},
        {"csv": "type,address\n", "dryRun": "perhaps"},
    ):
        response = client.post(reverse("mail-import-list"), payload, format="json")
        assert response.status_code == 400, (payload, response.content)


@pytest.mark.django_db(transaction=True)
def test_apply_runs_one_job_that_writes_all_rows() -> None:
    from tests.fixtures import build_cast

    cast = build_cast()
    make_domain(cast.ministry, "ministry.example")
    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("mail-import-list"), {"csv": GOOD, "dryRun": False}, format="json"
    )
    assert response.status_code == 201, response.content
    job = Job.objects.get(pk=response.json()["job"])
    assert job.status == Job.SUCCEEDED, (job.error, job.log)
    assert job.result["mailboxes"] == 2 and job.result["aliases"] == 2
    assert job.result["passwords_pending"] == 2
    # In-process tasks ran the activation job at the import's commit.
    activation = Job.objects.get(pk=job.result["activation_job"])
    assert activation.status == Job.SUCCEEDED, (activation.error, activation.log)
    anna = Mailbox.objects.get(email="anna@ministry.example")
    assert anna.quota_mb == 500 and passwords.verify("Birch-Canyon-Delta-31", anna.password_hash)
    assert Alias.objects.get(email="team@ministry.example").kind == "group"
    upload = CsvImport.objects.get()
    assert upload.status == CsvImport.APPLIED and upload.payload == ""
    record = AuditRecord.objects.get(action="mail.import.apply")
    assert record.actor_id == cast.sub_admin.pk
    assert "anna@ministry.example" in record.changes["after"]["mailboxes"]
    assert "Birch" not in str(job.params) and "Birch" not in job.log


@pytest.mark.django_db(transaction=True)
def test_apply_that_meets_a_limit_changes_nothing() -> None:
    from tests.fixtures import build_cast

    cast = build_cast()
    domain = make_domain(cast.ministry, "ministry.example")
    upload = CsvImport.objects.create(
        customer=cast.ministry,
        customer_path=cast.ministry.path,
        payload=GOOD,
        requested_by_id=cast.sub_admin.pk,
    )
    # The limit arrives between the dry run and the job.
    limit_actions.set_limits(actor=None, customer=cast.government, max_mailboxes=1)
    from ums import jobs

    job = Job.objects.create(
        kind=csv_import.JOB_KIND,
        title="t",
        customer_path=cast.ministry.path,
        params={"import_id": upload.pk},
        requested_by_id=cast.sub_admin.pk,
    )
    assert jobs.run(job.pk) == Job.FAILED
    job.refresh_from_db()
    assert "Nothing was imported" in job.error
    assert not Mailbox.objects.filter(domain=domain).exists()
    assert Alias.objects.filter(domain=domain, is_system=False).count() == 0


@pytest.mark.django_db
def test_export_is_safe_from_formula_injection(cast: Cast) -> None:
    domain = make_domain(cast.ministry, "ministry.example")
    make_mailbox(
        domain, "alice", display_name='=HYPERLINK("http://evil")', forward_to=["x@example.org"]
    )
    make_mailbox(make_domain(cast.shop, "shop.example"), "bob")
    response = token_client(cast.sub_admin).get(reverse("mail-mailbox-export"))
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][0] == "type"
    alice = next(r for r in rows if r[1] == "alice@ministry.example")
    assert alice[2].startswith("'=")
    assert not any("shop.example" in r[1] for r in rows[1:])
