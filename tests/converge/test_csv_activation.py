"""Imported plain passwords on real daemons: mail at once, logins only after activation.

A CSV import with plain passwords commits its mailboxes with the placeholder
:data:`mail.passwords.PENDING_HASH` and queues the activation job (issue 19). Here the
import runs through the API with jobs in-process, but the activation job's dispatch is
held back, so the test sees the fleet between the two: the converge the import caused
rendered the placeholder into both nodes' userdb, Postfix on the SMTP node relays to the
IMAP node and its virtual(8) writes into the new Maildir, while Courier (IMAPS on the
IMAP node, SASL for submission on the SMTP node) refuses the CSV's password, the
placeholder string and the obvious guesses. Then the held job runs through the real job
runner: its batch announces the change, the nodes converge, userdb holds the real hash
and the CSV password logs in over IMAPS and reads the message delivered while pending.
"""

from __future__ import annotations

import imaplib
import smtplib
from collections.abc import Callable, Iterator

import pytest
from django.urls import reverse

from deploy.models import NodeConvergeState
from mail import activation, passwords
from mail.models import Mailbox, PendingPassword
from tests.fixtures import Cast
from ums import jobs
from ums.models import Job

from .conftest import MailNodes
from .test_mail_flow import DOMAIN, assert_jobs_succeeded, send, setup_mail, tls, wait_for_message

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

USERS = ("dora", "emil", "fritz")
#: Per user; the password policy refuses one containing the mailbox name.
WORDS = {"dora": "Walnut", "emil": "Cobalt", "fritz": "Meadow"}
USERDB = "/etc/courier/userdb"


def csv_password(local: str) -> str:
    return f"Harbour-{WORDS[local]}-Quartz-47"


def import_csv() -> str:
    rows = [f"mailbox,{local}@{DOMAIN},{csv_password(local)}" for local in USERS]
    return "type,address,password\n" + "\n".join(rows) + "\n"


@pytest.fixture
def held_activation(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Jobs run in-process at commit as usual, except the activation job: its dispatch is
    held (the ids collected) so the test decides when it runs."""
    held: list[int] = []
    dispatch: Callable[[int], None] = jobs._dispatch

    def deferred(job_id: int) -> None:
        if Job.objects.filter(pk=job_id, kind=activation.JOB_KIND).exists():
            held.append(job_id)
            return
        dispatch(job_id)

    monkeypatch.setattr(jobs, "_dispatch", deferred)
    yield held


def imaps_login(nodes: MailNodes, email: str, password: str) -> imaplib.IMAP4_SSL:
    imap = imaplib.IMAP4_SSL(nodes.imap.address, 993, ssl_context=tls(), timeout=60)
    try:
        imap.login(email, password)
    except BaseException:
        imap.shutdown()
        raise
    return imap


def assert_imaps_refused(nodes: MailNodes, email: str, password: str) -> None:
    with pytest.raises(imaplib.IMAP4.error):
        imap = imaps_login(nodes, email, password)
        imap.logout()  # only reached if the login was wrongly accepted


def assert_submission_refused(nodes: MailNodes, email: str, password: str) -> None:
    with smtplib.SMTP(nodes.smtp.address, 587, timeout=30) as smtp:
        smtp.starttls(context=tls())
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login(email, password)


def userdb_password(nodes: MailNodes, tnode_name: str, email: str) -> str:
    """The ``systempw`` of ``email`` in the userdb the node's authdaemond reads."""
    tnode = getattr(nodes, tnode_name)
    for line in tnode.path(USERDB).read_text().splitlines():
        address, _tab, fields = line.partition("\t")
        if address == email:
            values = dict(field.split("=", 1) for field in fields.split("|"))
            return values["systempw"]
    raise AssertionError(f"{email} not in the {tnode_name} node's userdb")


def all_applied(nodes: MailNodes) -> bool:
    """Each node's desired configuration generation is the one it applied."""
    states = NodeConvergeState.objects.filter(node__in=[nodes.imap_node, nodes.smtp_node])
    return len(states) == 2 and all(s.desired_generation == s.applied_generation for s in states)


def read_inbox(imap: imaplib.IMAP4_SSL, marker: str) -> bytes:
    imap.select("INBOX")
    _typ, data = imap.search(None, "SUBJECT", marker)
    ids = data[0].split()
    assert ids, f"{marker} not in the INBOX over IMAP"
    _typ, fetched = imap.fetch(ids[-1], "(RFC822)")
    return fetched[0][1]


def test_imported_mailboxes_get_mail_at_once_and_log_in_only_after_activation(
    cast: Cast, mail_nodes: MailNodes, held_activation: list[int]
) -> None:
    client, _domain = setup_mail(cast)
    response = client.post(
        reverse("mail-import-list"), {"csv": import_csv(), "dryRun": False}, format="json"
    )
    assert response.status_code == 201, response.content
    import_job = Job.objects.get(pk=response.json()["job"])
    assert import_job.status == Job.SUCCEEDED, f"{import_job.log}\n{import_job.error}"
    assert import_job.result["passwords_pending"] == len(USERS)
    # The converge the import caused ran and succeeded on both nodes; the activation waits.
    assert_jobs_succeeded()
    after = Job.objects.filter(kind="node.converge", pk__gt=import_job.pk)
    assert {j.object_id for j in after} == {
        str(mail_nodes.imap_node.pk),
        str(mail_nodes.smtp_node.pk),
    }
    assert all_applied(mail_nodes)
    assert len(held_activation) == 1
    held = Job.objects.get(pk=held_activation[0])
    assert held.status == Job.PENDING and PendingPassword.objects.count() == len(USERS)

    for local in USERS:
        email = f"{local}@{DOMAIN}"
        assert Mailbox.objects.get(email=email).password_pending
        for node in ("imap", "smtp"):
            assert userdb_password(mail_nodes, node, email) == passwords.PENDING_HASH
    # Mail is delivered while pending: SMTP node -> IMAP node -> the new Maildir.
    for local in USERS:
        send(mail_nodes, f"{local}@{DOMAIN}", f"marker-pending-{local}")
    for local in USERS:
        assert f"hello marker-pending-{local}" in wait_for_message(
            mail_nodes, local, f"marker-pending-{local}", timeout=60
        )
    # No login works yet: not the CSV's password, not the placeholder or a part of it,
    # not an empty password; neither over IMAPS nor for submission (SASL via authdaemond).
    email = f"{USERS[0]}@{DOMAIN}"
    guesses = (
        csv_password(USERS[0]),
        passwords.PENDING_HASH,
        "notyetactive",
        "pending",
        "*",
        "",
    )
    for guess in guesses:
        assert_imaps_refused(mail_nodes, email, guess)
        assert_submission_refused(mail_nodes, email, guess)
    assert_imaps_refused(mail_nodes, f"{USERS[1]}@{DOMAIN}", csv_password(USERS[1]))

    # The activation runs through the real job runner: hashes commit, nodes converge.
    assert jobs.run(held.pk) == Job.SUCCEEDED
    held.refresh_from_db()
    assert held.result == {"activated": len(USERS)}, held.log
    assert not PendingPassword.objects.exists()
    assert_jobs_succeeded()
    assert all_applied(mail_nodes)
    for local in USERS:
        email = f"{local}@{DOMAIN}"
        stored = Mailbox.objects.get(email=email).password_hash
        assert stored != passwords.PENDING_HASH and passwords.verify(csv_password(local), stored)
        for node in ("imap", "smtp"):
            assert userdb_password(mail_nodes, node, email) == stored
        imap = imaps_login(mail_nodes, email, csv_password(local))
        try:
            assert b"hello marker-pending-" + local.encode() in read_inbox(
                imap, f"marker-pending-{local}"
            )
        finally:
            imap.logout()
    # Submission accepts the activated password too; the placeholder stays refused.
    with smtplib.SMTP(mail_nodes.smtp.address, 587, timeout=30) as smtp:
        smtp.starttls(context=tls())
        smtp.login(f"{USERS[0]}@{DOMAIN}", csv_password(USERS[0]))
    assert_imaps_refused(mail_nodes, f"{USERS[0]}@{DOMAIN}", passwords.PENDING_HASH)
