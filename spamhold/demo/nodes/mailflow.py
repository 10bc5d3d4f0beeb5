"""A little mail through the demo nodes: delivered messages, and two the content filter
holds (GTUBE spam and an ``.exe`` attachment), then ingested into the spam hold queue."""

from __future__ import annotations

import json
import smtplib
import time
from email.message import EmailMessage
from typing import Any

from django.utils.translation import gettext as _

from deploy.services.spamassassin import SPAMD_PORT
from spamhold import ingest
from spamhold.models import HeldMessage, Status
from tenants.models import Administrator
from tests.converge.test_filtering import GTUBE
from ums.models import Job

from ..jobrun import finish
from .enrol import in_node

CLAMD_PORT = 3310
SCANNER_TIMEOUT = 300
HOLD_TIMEOUT = 120

# (sender, recipient, subject, body); the recipients' domains do not greylist.
CLEAN = (
    ("minister@health.demoland.demo", "alice@demoland.demo", "Budget meeting", "Tuesday 10:00?"),
    ("partner@supplier.demo", "all-staff@demoland.demo", "Holiday schedule", "Attached soon."),
    ("customer@home.demo", "helpdesk@isp.demo", "Slow connection", "Since yesterday."),
)
HELD_SUBJECTS = ("Claim your prize now", "Invoice attached")


def _message(sender: str, to: str, subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg.set_content(body)
    return msg


def spam() -> EmailMessage:
    return _message(
        "offers@prizes.demo", "alice@demoland.demo", HELD_SUBJECTS[0], f"Dear winner\n{GTUBE}\n"
    )


def executable() -> EmailMessage:
    msg = _message("billing@unknown-sender.demo", "support@isp.demo", HELD_SUBJECTS[1], "See file.")
    msg.add_attachment(
        b"MZ\x90\x00\x03demo", maintype="application", subtype="octet-stream",
        filename="invoice.exe",
    )  # fmt: skip
    return msg


def _port_open(node: dict[str, Any], port: int) -> bool:
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), 5)"
    try:
        in_node(node, ["python3", "-c", probe], timeout=30)
    except Exception:
        return False
    return True


def wait_for_scanners(smtp: dict[str, Any]) -> None:
    """spamd and clamd load their rules and signatures for a while after the converge."""
    deadline = time.monotonic() + SCANNER_TIMEOUT
    while not (_port_open(smtp, SPAMD_PORT) and _port_open(smtp, CLAMD_PORT)):
        if time.monotonic() > deadline:
            raise TimeoutError("spamd/clamd did not start listening on the SMTP node")
        time.sleep(2)


def send(smtp: dict[str, Any], msg: EmailMessage) -> None:
    """Send over SMTP, retrying temporary refusals while the node finishes starting."""
    deadline = time.monotonic() + SCANNER_TIMEOUT
    while True:
        try:
            with smtplib.SMTP(smtp["address"], 25, timeout=120) as client:
                client.send_message(msg)
            return
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError, OSError) as exc:
            temporary = not isinstance(exc, smtplib.SMTPResponseException) or exc.smtp_code < 500
            if isinstance(exc, smtplib.SMTPRecipientsRefused):
                temporary = max(code for code, _msg in exc.recipients.values()) < 500
            if not temporary or time.monotonic() > deadline:
                raise
            time.sleep(2)


def held_in_queue(smtp: dict[str, Any]) -> int:
    out = in_node(smtp, ["postqueue", "-j"], timeout=60)
    items = [json.loads(line) for line in out.splitlines() if line.strip()]
    return sum(1 for item in items if item.get("queue_name") == "hold")


def send_demo_mail(smtp: dict[str, Any], log: Any) -> None:
    wait_for_scanners(smtp)
    for sender, to, subject, body in CLEAN:
        send(smtp, _message(sender, to, subject, body))
    before = held_in_queue(smtp)
    send(smtp, spam())
    send(smtp, executable())
    deadline = time.monotonic() + HOLD_TIMEOUT
    while held_in_queue(smtp) < before + len(HELD_SUBJECTS):
        if time.monotonic() > deadline:
            raise TimeoutError("the demo's spam was not held on the SMTP node")
        time.sleep(1)
    log(
        _("Sent %(sent)d messages; the content filter holds %(held)d of them.")
        % {"sent": len(CLEAN) + len(HELD_SUBJECTS), "held": len(HELD_SUBJECTS)}
    )


def ingest_held(admin: Administrator | None) -> int:
    """Press the spam hold's Refresh (a job); how many held messages the portal shows."""
    job = ingest.refresh(actor=admin)
    if finish(job.pk) != Job.SUCCEEDED:
        job.refresh_from_db()
        raise RuntimeError(f"ingesting held mail failed: {job.error}")
    return HeldMessage.objects.filter(status=Status.ONHOLD).count()
