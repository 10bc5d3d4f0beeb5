"""Plain passwords of a CSV import are activated after the import committed (issue 19).

The import job writes the mailboxes at once (mail is delivered) with a hash no password
verifies and each password Fernet-encrypted in ``mail_pendingpassword``; the activation job
hashes them batch by batch. Real PostgreSQL, the real job runner (``ums.jobs.run``) and, for
the crash, a real process killed with SIGKILL in the middle of a batch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.urls import reverse

from mail import actions, activation, csv_import, passwords
from mail.models import CsvImport, Mailbox, PendingPassword
from mail.signals import mail_changed
from tests.fixtures import Cast, build_cast, token_client
from tests.mail.helpers import make_domain
from tests.mail.test_csv_prehashed import SALT, system_crypt
from tests.portal.conftest import login  # noqa: F401
from ums import jobs, reconcile
from ums.models import Job

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


def _password(i: int) -> str:
    return f"Harbour-Quartz-{i:03d}-Mesa"


def _csv(count: int, *, hashed: int = 0) -> str:
    lines = ["type,address,password"]
    lines += [f"mailbox,user{i}@ministry.example,{_password(i)}" for i in range(count)]
    prehashed = system_crypt("Birch-Canyon-Delta-31", f"$6${SALT}$")
    lines += [f"mailbox,moved{i}@ministry.example,{prehashed}" for i in range(hashed)]
    return "\n".join(lines) + "\n"


@pytest.fixture
def queued_only(settings: Any) -> None:
    """Jobs are queued for a separate runner (the embedded one of ``make run``) instead of
    running at commit, so the test sees the state between the import and the activation."""
    settings.UMS_TASK_MODE = "embedded"
    jobs.load_handlers()  # what the runner does before it runs a job


@pytest.fixture
def setup() -> Cast:
    cast = build_cast()
    make_domain(cast.ministry, "ministry.example")
    return cast


def _import(cast: Cast, data: str) -> Job:
    upload, report = csv_import.request_import(actor=cast.sub_admin, data=data)
    assert upload is not None, report
    assert jobs.run(upload.job_id) == Job.SUCCEEDED, Job.objects.get(pk=upload.job_id).error
    return Job.objects.get(pk=upload.job_id)


def _activation_job() -> Job:
    return Job.objects.get(kind=activation.JOB_KIND)


def _verifies(email: str, password: str) -> bool:
    stored = Mailbox.objects.get(email=email).password_hash
    return passwords.verify(password, stored) and system_crypt(password, stored) == stored


def test_import_commits_at_once_and_passwords_verify_after_activation(
    setup: Cast,
    queued_only: None,
    login: Any,  # noqa: F811
) -> None:
    job = _import(setup, _csv(5))
    assert job.result["mailboxes"] == 5 and job.result["passwords_pending"] == 5
    assert "passwords being activated" in job.log
    assert "Harbour-Quartz" not in job.log
    assert Mailbox.objects.filter(domain__name="ministry.example").count() == 5
    assert PendingPassword.objects.count() == 5
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM mail_pendingpassword")
        raw = [secret for (secret,) in cursor.fetchall()]
    assert raw and not any("Harbour" in secret for secret in raw)
    for i in range(5):
        mailbox = Mailbox.objects.get(email=f"user{i}@ministry.example")
        assert mailbox.password_pending
        assert not passwords.verify(_password(i), mailbox.password_hash)
        # Courier's authlib and the Radicale plugin: crypt(3) of the password vs stored.
        assert system_crypt(_password(i), mailbox.password_hash) != mailbox.password_hash
    client = token_client(setup.sub_admin)
    first = Mailbox.objects.get(email="user0@ministry.example")
    detail = client.get(reverse("mail-mailbox-detail", args=[first.pk])).json()
    assert detail["passwordPending"] is True
    listed = client.get(reverse("mail-mailbox-list"), {"domain": first.domain_id}).json()["results"]
    assert {row["passwordPending"] for row in listed} == {True}
    portal = login(setup.sub_admin)
    page = reverse("mail:domain-detail", args=[first.domain_id])
    assert portal.get(page).content.decode().count("password being activated") == 5

    pending_job = _activation_job()
    assert pending_job.status == Job.PENDING and pending_job.progress_total == 5
    told: list[dict[str, Any]] = []
    mail_changed.connect(lambda **kw: told.append(kw), dispatch_uid="test-activation", weak=False)
    try:
        assert jobs.run(pending_job.pk) == Job.SUCCEEDED
    finally:
        mail_changed.disconnect(dispatch_uid="test-activation")
    done = _activation_job()
    assert done.progress_done == 5 and done.result == {"activated": 5}
    assert not PendingPassword.objects.exists()
    assert all(_verifies(f"user{i}@ministry.example", _password(i)) for i in range(5))
    assert [t["domain_ids"] for t in told] == [[first.domain_id]]
    detail = client.get(reverse("mail-mailbox-detail", args=[first.pk])).json()
    assert detail["passwordPending"] is False
    assert "password being activated" not in portal.get(page).content.decode()


def test_prehashed_rows_are_never_pending(setup: Cast, queued_only: None) -> None:
    job = _import(setup, _csv(0, hashed=3))
    assert "passwords_pending" not in job.result
    assert not PendingPassword.objects.exists()
    assert not Job.objects.filter(kind=activation.JOB_KIND).exists()
    assert _verifies("moved0@ministry.example", "Birch-Canyon-Delta-31")


def test_set_password_while_pending_wins_and_delete_cleans_up(
    setup: Cast, queued_only: None
) -> None:
    _import(setup, _csv(3))
    changed = Mailbox.objects.get(email="user0@ministry.example")
    actions.set_mailbox_password(
        actor=setup.sub_admin, mailbox=changed, password="Ember-Forest-Glade-62"
    )
    actions.delete_mailbox(
        actor=setup.sub_admin, mailbox=Mailbox.objects.get(email="user1@ministry.example")
    )
    assert list(PendingPassword.objects.values_list("mailbox__email", flat=True)) == [
        "user2@ministry.example"
    ]
    assert jobs.run(_activation_job().pk) == Job.SUCCEEDED
    assert _verifies("user0@ministry.example", "Ember-Forest-Glade-62")
    assert not _verifies("user0@ministry.example", _password(0))
    assert _verifies("user2@ministry.example", _password(2))


def test_a_lost_activation_job_is_queued_again_by_the_reconciler(
    setup: Cast, queued_only: None, settings: Any
) -> None:
    _import(setup, _csv(3))
    Job.objects.filter(kind=activation.JOB_KIND).delete()  # as if never queued
    settings.UMS_TASK_MODE = "eager"  # this time the reconciler's job runs here and now
    report = reconcile.run_all()
    assert report["mail.passwords"].get("started"), report
    assert not PendingPassword.objects.exists()
    assert all(_verifies(f"user{i}@ministry.example", _password(i)) for i in range(3))
    # Nothing pending: the pass finds nothing and queues nothing.
    assert "started" not in reconcile.run_all()["mail.passwords"]


CHILD = """
import sys, time
import django
django.setup()
from mail import activation, passwords
from ums import jobs
jobs.load_handlers()
activation.BATCH = 3
real = passwords.hash_many
calls = []
def hash_many(secrets):
    calls.append(len(secrets))
    if len(calls) == 2:  # in the middle of the second batch: its hashes never commit
        print("mid-batch", flush=True)
        time.sleep(600)
    return real(secrets)
passwords.hash_many = hash_many
jobs.run(int(sys.argv[1]))
"""


def test_an_activation_killed_mid_batch_loses_nothing_and_heals(
    setup: Cast, queued_only: None, settings: Any
) -> None:
    _import(setup, _csv(7))
    job = _activation_job()
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DJANGO_SETTINGS_MODULE": "ums.settings",
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(job.pk)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline() if child.stdout else ""
        assert line.strip() == "mid-batch", f"child exited {child.poll()}"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    # The first batch committed; the second was being hashed and left its rows pending.
    assert PendingPassword.objects.count() == 4
    activated = [i for i in range(7) if _verifies(f"user{i}@ministry.example", _password(i))]
    assert len(activated) == 3
    assert all(
        Mailbox.objects.get(email=f"user{i}@ministry.example").password_pending
        for i in range(7)
        if i not in activated
    )
    assert Job.objects.get(pk=job.pk).status == Job.RUNNING  # its worker is gone
    settings.UMS_TASK_MODE = "eager"
    reconcile.run_all()  # the jobs reconciler sees the dead owner and runs it again here
    healed = Job.objects.get(pk=job.pk)
    assert healed.status == Job.SUCCEEDED, (healed.error, healed.log)
    assert healed.attempts == 2 and healed.progress_done == 7
    assert not PendingPassword.objects.exists()
    assert all(_verifies(f"user{i}@ministry.example", _password(i)) for i in range(7))


def test_an_invalid_file_changes_nothing_and_a_dry_run_holds_nothing(setup: Cast) -> None:
    report = csv_import.dry_run(_csv(3), actor=setup.sub_admin)
    assert report["valid"] and report["mailboxes"] == 3
    bad = _csv(3) + "mailbox,weak@ministry.example,short\n"
    upload, report = csv_import.request_import(actor=setup.sub_admin, data=bad)
    assert upload is None and not report["valid"]
    assert not Mailbox.objects.filter(domain__name="ministry.example").exists()
    assert not PendingPassword.objects.exists() and not CsvImport.objects.exists()
    assert not Job.objects.filter(kind=activation.JOB_KIND).exists()


def test_the_placeholder_renders_on_nodes_but_verifies_no_password() -> None:
    """Mail is delivered at once: the renderers' crypt-format check (Courier userdb, the
    Radicale users file) takes the placeholder; crypt(3) of any password never equals it."""
    from deploy.services.postfix import safe

    assert safe.password_hash(passwords.PENDING_HASH) == passwords.PENDING_HASH
    for guess in ("", "notyetactive", "pending", passwords.PENDING_HASH):
        assert system_crypt(guess, passwords.PENDING_HASH) != passwords.PENDING_HASH
        assert not passwords.verify(guess, passwords.PENDING_HASH)
