"""Fixtures for spam hold tests: the two real mail nodes with messages on hold.

Putting mail on hold is the content filter's job (its own tests cover that). Here, to
have real held messages before the filter exists, a test makes the SMTP node's Postfix
defer relaying (``defer_transports``), sends mail with the header the filter adds,
moves it to the hold queue with ``postsuper -h ALL`` and restores the configuration.
Everything after that (ingestion, release, delete, expiry) runs against the real queue.
"""

from __future__ import annotations

import json
import os
import smtplib
import time
from dataclasses import dataclass, field
from email.message import EmailMessage

import pytest
from django.urls import reverse

from tests.converge.conftest import (  # noqa: F401
    MAIL_PRIVATE_PATHS,
    MailNodes,
    approved_node,
    mail_services,
    trusting_cluster,
)
from tests.converge.test_mail_flow import DOMAIN, PASSWORD, maildir
from tests.fixtures import Cast, token_client
from tests.servers.conftest import controller_key, controller_pkey, zone  # noqa: F401
from ums.models import Job

POSTFIX = "/etc/postfix"
# Where release/delete commands leave their markers on a node: private to each test node
# (the harness shares everything else under /var with this machine).
MARKS_ROOT = "/var/lib/ums"


@pytest.fixture
def mail_nodes(
    tmp_path_factory: pytest.TempPathFactory,
    controller_pkey,  # noqa: F811
    controller_key,  # noqa: F811
    zone,  # noqa: F811
    cast: Cast,
    mail_services: None,  # noqa: F811
):
    """The converge tests' two mail nodes (smtp, imap), with a private /var/lib/ums."""
    workdir = tmp_path_factory.mktemp("hold")
    paths = (*MAIL_PRIVATE_PATHS, MARKS_ROOT)
    with trusting_cluster(workdir, 2, controller_pkey, paths) as cluster:
        smtp, imap = cluster.nodes
        imap_node = approved_node(zone, cast, imap, ["imap"])
        smtp_node = approved_node(zone, cast, smtp, ["smtp"])
        yield MailNodes(cluster, smtp, imap, smtp_node, imap_node)


def node_queue(tnode, queue: str | None = "hold") -> list[dict]:
    """The node's queue as ``postqueue -j`` reports it (only ``queue`` unless None)."""
    out = tnode.exec_in_node(["postqueue", "-j"], check=False).stdout
    entries = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [e for e in entries if queue is None or e.get("queue_name") == queue]


def _reload(tnode) -> None:
    tnode.exec_in_node(["script", "-qec", "postfix reload", "/dev/null"])


@dataclass
class HoldBench:
    """The mail nodes with a hosted domain (``DOMAIN``, mailbox alice) and helpers."""

    nodes: MailNodes
    cast: Cast
    sent: list[str] = field(default_factory=list)

    @property
    def smtp(self):
        return self.nodes.smtp

    def hold(self, messages: list[dict], *, timeout: float = 90) -> dict[str, str]:
        """Send ``messages`` and leave them on hold; returns {subject: queue id}.

        Each message is a dict with ``subject`` and optionally ``hold_header`` (the value
        of ``X-UMS-Hold``; omitted: no header), ``sender``, ``to``, ``body``.
        """
        smtp = self.nodes.smtp
        before = {e["queue_id"] for e in node_queue(smtp, None)}
        main_cf = smtp.path(f"{POSTFIX}/main.cf")
        original = main_cf.read_bytes()
        # Relaying deferred, and the content filter (milter, header checks that strip an
        # incoming X-UMS-Hold) out of the way while the test plays the filter's part.
        overrides = [
            "defer_transports = smtp ums-imap",
            "smtpd_milters =",
            "non_smtpd_milters =",
            "header_checks =",
            "enable_long_queue_ids = yes",
        ]
        smtp.exec_in_node(["postconf", "-c", POSTFIX, "-e", *overrides])
        _reload(smtp)
        try:
            with smtplib.SMTP(smtp.address, 25, timeout=60) as client:
                for item in messages:
                    message = EmailMessage()
                    message["From"] = item.get("sender", "spammer@outside.test")
                    message["To"] = item.get("to", f"alice@{DOMAIN}")
                    message["Subject"] = item["subject"]
                    if item.get("hold_header") is not None:
                        message["X-UMS-Hold"] = item["hold_header"]
                    message.set_content(item.get("body", f"body of {item['subject']}\n"))
                    client.send_message(message)
            # Wait until every new message sits in the deferred queue (not active).
            deadline = time.monotonic() + timeout
            while True:
                entries = [e for e in node_queue(smtp, None) if e["queue_id"] not in before]
                if len(entries) >= len(messages) and all(
                    e["queue_name"] == "deferred" for e in entries
                ):
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"messages not deferred in time: {entries}")
                time.sleep(0.3)
            smtp.exec_in_node(["postsuper", "-h", "ALL", "deferred"])
        finally:
            main_cf.write_bytes(original)
            _reload(smtp)
        held = {e["queue_id"] for e in node_queue(smtp)} - before
        assert len(held) == len(messages), held
        subjects: dict[str, str] = {}
        for queue_id in held:
            headers = smtp.exec_in_node(["postcat", "-hq", queue_id]).stdout
            for line in headers.splitlines():
                if line.startswith("Subject: "):
                    subjects[line[len("Subject: ") :].strip()] = queue_id
        return subjects

    def delivered(self, marker: str, local: str = "alice") -> bool:
        folder = maildir(self.nodes, local)
        if not folder.is_dir():
            return False
        return any(marker in p.read_text(errors="replace") for p in folder.iterdir())

    def deliveries(self, marker: str, local: str = "alice") -> int:
        folder = maildir(self.nodes, local)
        if not folder.is_dir():
            return 0
        return sum(marker in p.read_text(errors="replace") for p in folder.iterdir())

    def wait_delivered(self, marker: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not self.delivered(marker):
            if time.monotonic() > deadline:
                log = self.nodes.smtp.path("/var/spool/postfix/maillog")
                raise AssertionError(
                    f"{marker} not delivered\n{log.read_text() if log.exists() else ''}"
                )
            time.sleep(0.3)


@pytest.fixture
def bench(cast: Cast, mail_nodes: MailNodes) -> HoldBench:
    # The mail root as the IMAP node's mail store would have it (owned by the mail uid):
    # Courier's converge checks it exists before it applies mailbox ACLs.
    # (Created after the approval's converge ran, so only the jobs from here on count.)
    root = mail_nodes.imap.path("/var/mail/vhosts")
    root.mkdir(parents=True, exist_ok=True)
    os.chown(root, 5000, 5000)
    last = Job.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("customer-list"),
        {"name": "Converge Customer", "parent": cast.government.pk},
        format="json",
    )
    assert response.status_code == 201, response.content
    response = client.post(
        reverse("mail-domain-list"),
        {"name": DOMAIN, "customer": response.json()["id"]},
        format="json",
    )
    assert response.status_code == 201, response.content
    response = client.post(
        reverse("mail-mailbox-list"),
        {"domain": response.json()["id"], "localPart": "alice", "password": PASSWORD},
        format="json",
    )
    assert response.status_code == 201, response.content
    failed = Job.objects.filter(pk__gt=last, status=Job.FAILED)
    assert not failed.exists(), "\n".join(f"{j.title}: {j.error}" for j in failed)
    return HoldBench(nodes=mail_nodes, cast=cast)
