"""The CSV import writes all rows or none: a failure in the middle leaves nothing behind.

Issue 11: a job marked Failed had written all 41 rows. These tests run the real job runner in
autocommit (transactional tests, as a worker runs it) and make the database itself refuse a
row in the middle of the import, with a trigger created by the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection

from audit.models import AuditRecord
from mail import csv_import
from mail.models import Alias, CsvImport, Mailbox
from mail.signals import mail_changed
from tests.fixtures import Cast, build_cast
from tests.mail.helpers import make_domain
from ums import jobs
from ums.models import Job

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = 41
POISONED = "user20@ministry.example"


def _csv(rows: int = ROWS) -> str:
    lines = ["type,address,display_name,password,quota_mb,targets,enabled"]
    lines += [
        f"mailbox,user{i}@ministry.example,User {i},Birch-Canyon-Delta-{i:02d}x,100,,true"
        for i in range(rows - 1)
    ]
    lines.append("alias,team@ministry.example,,,,user1@ministry.example,")
    return "\n".join(lines) + "\n"


@pytest.fixture
def cast_and_domain() -> tuple[Cast, Any]:
    cast = build_cast()
    return cast, make_domain(cast.ministry, "ministry.example")


@pytest.fixture
def poisoned_row() -> Iterator[None]:
    """A trigger that refuses one mailbox in the middle of the file, as a constraint would."""
    with connection.cursor() as cursor:
        # No parameters: the SQL is sent as written (RAISE's own % placeholder included).
        cursor.execute(
            "CREATE FUNCTION test_refuse_mailbox() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.email = '{POISONED}' THEN "
            "RAISE EXCEPTION 'mailbox % refused by test trigger', NEW.email; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        cursor.execute(
            "CREATE TRIGGER test_refuse_mailbox BEFORE INSERT ON mail_mailbox "
            "FOR EACH ROW EXECUTE FUNCTION test_refuse_mailbox()"
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER IF EXISTS test_refuse_mailbox ON mail_mailbox")
        cursor.execute("DROP FUNCTION IF EXISTS test_refuse_mailbox()")


def _request(cast: Cast, data: str) -> Job:
    upload, report = csv_import.request_import(actor=cast.sub_admin, data=data)
    assert upload is not None, report
    return Job.objects.get(pk=upload.job_id)


def _run(job: Job) -> Job:
    # In-process tasks already ran the job at commit; run() then skips a finished job.
    jobs.run(job.pk)
    job.refresh_from_db()
    return job


def test_a_row_refused_mid_import_leaves_nothing_written(
    cast_and_domain: tuple[Cast, Any], poisoned_row: None
) -> None:
    cast, domain = cast_and_domain
    audits_before = AuditRecord.objects.filter(action="mail.import.apply").count()
    job = _run(_request(cast, _csv()))

    assert job.status == Job.FAILED
    assert job.error.startswith("Nothing was imported")
    assert "refused by test trigger" in job.error
    assert "Traceback" not in job.error and "File " not in job.error
    assert Mailbox.objects.filter(domain=domain).count() == 0
    assert Alias.objects.filter(domain=domain, is_system=False).count() == 0
    assert AuditRecord.objects.filter(action="mail.import.apply").count() == audits_before
    upload = CsvImport.objects.get()
    assert upload.status == CsvImport.FAILED and upload.payload == ""


def test_without_the_refusal_the_same_file_writes_every_row(
    cast_and_domain: tuple[Cast, Any],
) -> None:
    cast, domain = cast_and_domain
    job = _run(_request(cast, _csv()))
    assert job.status == Job.SUCCEEDED, job.error
    assert Mailbox.objects.filter(domain=domain).count() == ROWS - 1
    assert AuditRecord.objects.filter(action="mail.import.apply").count() == 1


def test_a_failing_receiver_after_commit_does_not_mark_a_written_import_failed(
    cast_and_domain: tuple[Cast, Any],
) -> None:
    """The defect of issue 11 the other way round: rows written, job reported Failed."""
    cast, domain = cast_and_domain

    def broken_receiver(**kwargs: Any) -> None:
        if kwargs.get("kind") == "import":
            raise RuntimeError("node bookkeeping is down")

    mail_changed.connect(broken_receiver, dispatch_uid="test-broken-receiver")
    try:
        job = _run(_request(cast, _csv(5)))
    finally:
        mail_changed.disconnect(dispatch_uid="test-broken-receiver")
    assert Mailbox.objects.filter(domain=domain).count() == 4
    assert job.status == Job.SUCCEEDED, job.error
    assert "telling the nodes failed" in job.log
