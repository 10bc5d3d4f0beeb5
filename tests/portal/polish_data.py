"""A populated tree for the dashboard, jobs, audit and browser tests of the portal polish.

In the sub administrator's scope (Government and below): two domains with mailboxes (some
used space), an offline node with an open alert, held mail over two days, a failed job
whose error carries a traceback and a running one. Outside it (ISP's Shop): the same kinds
of objects, which must never be counted or listed for the sub administrator.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.utils import timezone

from mail import actions as mail_actions
from mail.models import Domain, Mailbox
from servers import actions as server_actions
from servers.choices import NodeStatus
from servers.models import Node, NodeAlert
from spamhold.models import HeldMessage, Reason, Status
from tenants import limit_actions
from tenants.models import Customer
from tests.fixtures import PASSWORD, Cast
from ums.models import Job

TRACEBACK_ERROR = (
    "Could not reach smtp1.gov.example: connection refused\n\n"
    "Traceback (most recent call last):\n"
    '  File "/srv/ums/deploy/jobs.py", line 240, in converge_node\n'
    "    raise ConnectionRefusedError(111)\n"
    "ConnectionRefusedError: [Errno 111] Connection refused\n"
)


@dataclass
class Tree:
    domain: Domain
    mailbox: Mailbox
    outside_domain: Domain
    node: Node
    outside_node: Node
    failed_job: Job
    running_job: Job
    outside_job: Job
    held: HeldMessage


def _held(customer: Customer, n: int, when: datetime.datetime) -> None:
    for i in range(n):
        HeldMessage.objects.create(
            node=None,
            node_name="smtp1",
            queue_id=f"Q{customer.pk}X{when:%d%H}X{i}",
            customer=customer,
            customer_path=customer.path,
            received_at=when,
            sender=f"x{i}@spam.example",
            sender_domain="spam.example",
            recipients=["a@gov.example"],
            recipient="a@gov.example",
            recipient_domain="gov.example",
            reason=Reason.SPAM,
            status=Status.ONHOLD,
            expires_at=when + datetime.timedelta(days=30),
        )


def _node(customer: Customer, hostname: str, status: str, alert: str) -> Node:
    """A node in a zone of its own, with one open alert."""
    zone = server_actions.create_zone(actor=None, customer=customer, name=f"DC {hostname[:6]}")
    node = Node.objects.create(
        customer=customer,
        customer_path=customer.path,
        zone=zone,
        hostname=hostname,
        ssh_address="192.0.2.10",
        status=status,
    )
    NodeAlert.objects.create(
        node=node, customer_path=node.customer_path, kind="offline", message=alert
    )
    return node


def build_tree(cast: Cast, *, mailboxes: int = 2) -> Tree:
    actor = cast.root_admin
    limit_actions.set_limits(
        actor=actor, customer=cast.government, max_mailboxes=10, max_domains=5, max_quota_gb=20
    )
    domain = mail_actions.create_domain(actor=actor, customer=cast.ministry, name="gov.example")
    mail_actions.create_domain(actor=actor, customer=cast.department, name="dept.gov.example")
    made = [
        mail_actions.create_mailbox(
            actor=actor, domain=domain, local_part=f"user{i}", password=PASSWORD, quota_mb=1024
        )
        for i in range(mailboxes)
    ]
    Mailbox.objects.filter(pk=made[0].pk).update(used_bytes=300 * 1024 * 1024)
    outside_domain = mail_actions.create_domain(
        actor=actor, customer=cast.shop, name="shop.example"
    )
    mail_actions.create_mailbox(
        actor=actor, domain=outside_domain, local_part="owner", password=PASSWORD
    )

    node = _node(
        cast.ministry, "smtp1.gov.example", NodeStatus.OFFLINE, "No metrics for 3 collections."
    )
    outside_node = _node(cast.shop, "mx.shop.example", NodeStatus.DEGRADED, "Shop node alert.")

    now = timezone.now()
    _held(cast.ministry, 3, now)
    _held(cast.ministry, 2, now - datetime.timedelta(days=1))
    _held(cast.shop, 7, now)

    failed = Job.objects.create(
        kind="node.converge",
        title="Converge smtp1.gov.example",
        status=Job.FAILED,
        customer_path=cast.ministry.path,
        object_type="servers.node",
        object_id=str(node.pk),
        params={"node_id": node.pk, "dry_run": False},
        log="[10:00:00] connecting\n[10:00:01] failed: connection refused\n",
        error=TRACEBACK_ERROR,
        requested_by_name="sub.admin",
    )
    running = Job.objects.create(
        kind="mail.csv_import",
        title="Import 40 rows from CSV",
        status=Job.RUNNING,
        customer_path=cast.ministry.path,
        progress_done=10,
        progress_total=40,
    )
    outside = Job.objects.create(
        kind="x",
        title="Shop secret job",
        status=Job.FAILED,
        customer_path=cast.shop.path,
        error="shop failure",
    )
    return Tree(
        domain=domain,
        mailbox=made[0],
        outside_domain=outside_domain,
        node=node,
        outside_node=outside_node,
        failed_job=failed,
        running_job=running,
        outside_job=outside,
        held=HeldMessage.objects.filter(customer=cast.ministry).order_by("id").first(),
    )
