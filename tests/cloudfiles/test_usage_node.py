"""Cloud files in the usage figures, end to end against the Nextcloud STAND-IN on a node.

STAND-IN: Nextcloud cannot be installed here; tests/standins/nextcloud/standin.py answers
the occ commands with Nextcloud's shapes, including ``usage-report:generate`` (the
user_usage_report app) over the users' files in Nextcloud's data directory layout. The
node (namespaced sshd), SSH, converge, the collection, the snapshot and the API are the
real ones: a file written into a user's ``files`` folder is an upload.
"""

from __future__ import annotations

import csv
import io

import pytest
from django.urls import reverse
from django.utils import timezone

from cloudfiles import collect
from cloudfiles.models import CloudAccount
from mail.models import Mailbox
from tests.fixtures import Cast, token_client
from usage import snapshot
from usage.models import DailyUsage

from .conftest import CloudNode
from .helpers import assert_jobs_succeeded, client_for, customer, domain, mailbox
from .nodes import STATE_DIR

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]


def upload(cloud: CloudNode, uid: str, name: str, size: int) -> None:
    path = cloud.nextcloud.tnode.path(f"{STATE_DIR}/data/{uid}/files/{name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def test_uploads_raise_files_bytes_and_enabled_accounts_are_files_users(
    cast: Cast, cloud_node: CloudNode
) -> None:
    client = client_for(cast)
    parent = customer(client, cast, "Cloud Parent")
    response = client.post(
        reverse("customer-list"), {"name": "Cloud Child", "parent": parent}, format="json"
    )
    assert response.status_code == 201, response.content
    child = response.json()["id"]
    mailbox(client, domain(client, parent, "parent.example"), "alice", files=True)
    bob = mailbox(client, domain(client, parent, "parent2.example"), "bob", files=False)
    mailbox(client, domain(client, child, "child.example"), "carol", files=True)
    assert_jobs_succeeded()
    # The converge's result: accounts for alice and carol, none for bob (flag off).
    active = set(CloudAccount.objects.filter(active=True).values_list("mailbox__email", flat=True))
    assert active == {"alice@parent.example", "carol@child.example"}
    assert "user_usage_report" in cloud_node.nextcloud.state()["apps"]

    upload(cloud_node, "alice@parent.example", "report.pdf", 300_000)
    upload(cloud_node, "carol@child.example", "photo.jpg", 50_000)
    counts = collect.sweep()
    assert (counts["nodes"], counts["missed"]) == (1, 0), counts
    day = timezone.now().date()
    snapshot.take(day)
    rows = {r.customer_id: r for r in DailyUsage.objects.filter(day=day)}
    assert (rows[parent].own_files_bytes, rows[parent].own_files_users) == (300_000, 1)
    assert (rows[child].own_files_bytes, rows[child].own_files_users) == (50_000, 1)
    # Subtree sums equal the sum of the customers' own figures.
    assert (rows[parent].tree_files_bytes, rows[parent].tree_files_users) == (350_000, 2)
    government = rows[cast.government.pk]
    below = [r for r in rows.values() if r.customer_path.startswith(government.customer_path)]
    assert government.tree_files_bytes == sum(r.own_files_bytes for r in below) >= 350_000

    # Another upload: the next collection and snapshot show it, in the API and the CSV.
    upload(cloud_node, "alice@parent.example", "more.bin", 700_000)
    collect.sweep()
    snapshot.take(day)
    admin = token_client(cast.root_admin)
    query = {"customer": parent, "from": day.isoformat(), "to": day.isoformat(), "group": "day"}
    body = admin.get(reverse("usage-report"), query).json()
    assert body["notBuilt"] == []  # cloud files and chat are measured
    [line] = body["lines"]
    assert line["peak"]["filesBytes"] == 1_050_000 and line["peak"]["filesUsers"] == 2
    text = b"".join(admin.get(reverse("usage-report-csv"), query).streaming_content).decode()
    [row] = list(csv.DictReader(io.StringIO(text)))
    assert (row["files_bytes"], row["files_users"]) == ("1050000", "2")

    # Turning bob's flag on makes him a user after the converge; alice's off: not counted.
    for pk, value in ((bob, "allow"), (Mailbox.objects.get(local_part="alice").pk, "deny")):
        response = client.patch(
            reverse("mail-mailbox-detail", args=[pk]),
            {"protocolAccess": {"files": value}},
            format="json",
        )
        assert response.status_code == 200, response.content
    assert_jobs_succeeded()
    snapshot.take(day)
    row = DailyUsage.objects.get(customer_id=parent, day=day)
    assert row.own_files_users == 1  # bob now, alice's account disabled
    assert row.own_files_bytes == 1_000_000  # alice's files are still stored and counted

    # The node's sshd down: the collection counts it missed and keeps the last values.
    cloud_node.nextcloud.tnode.stop()
    counts = collect.sweep()
    assert (counts["nodes"], counts["missed"]) == (0, 1), counts
    kept = CloudAccount.objects.get(mailbox__email="alice@parent.example")
    assert kept.used_bytes == 1_000_000
