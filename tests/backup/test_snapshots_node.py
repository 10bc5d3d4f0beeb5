"""Snapshots end to end on a real IMAP node: a zfs-fuse pool inside the node's namespace
(the converge fleet of tests/converge), mail delivered into the domain's dataset, then
"Snapshot now" through the API and the scheduler, both as jobs over SSH; the API lists
what the node reports."""

from __future__ import annotations

import secrets

import paramiko
import pytest
from django.urls import reverse

from backup import tasks
from deploy.services import registry
from deploy.services.zfs import SERVICE as ZFS
from servers.models import Zone
from tests.converge.conftest import (  # noqa: F401  (fixtures)
    controller_key,
    controller_pkey,
    mail_services,
    zone,
)
from tests.converge.fleet import Fleet, fleet, new_pool_name
from tests.converge.test_mail_store import IMAP, PASSWORD, _failed_jobs, _send, _wait_in_node
from tests.fixtures import Cast, token_client
from ums import jobs
from ums.models import Job

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]
DOMAIN = "snapnode.example"


@pytest.fixture
def store_fleet(
    tmp_path_factory: pytest.TempPathFactory,
    controller_pkey: paramiko.PKey,  # noqa: F811
    controller_key,  # noqa: F811
    zone: Zone,  # noqa: F811
    cast: Cast,
    mail_services: None,  # noqa: F811
    settings,
    monkeypatch: pytest.MonkeyPatch,
):
    pool = new_pool_name()
    monkeypatch.setattr(registry, "SERVICES", [ZFS, *registry.SERVICES])
    settings.UMS_CONVERGE = {**settings.UMS_CONVERGE, "mail_store_pool": pool}
    with fleet(
        tmp_path_factory, controller_pkey, zone, cast, [["imap"], ["smtp"]], zfs={IMAP: pool}
    ) as f:
        yield f


def test_snapshot_now_and_schedule_on_a_real_node(cast: Cast, store_fleet: Fleet) -> None:
    jobs.load_handlers()
    f, pool = store_fleet, store_fleet.pools[IMAP]
    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("mail-domain-list"), {"name": DOMAIN, "customer": cast.ministry.pk}, format="json"
    )
    assert response.status_code == 201, response.content
    domain_id = response.json()["id"]
    response = client.post(
        reverse("mail-mailbox-list"),
        {"domain": domain_id, "localPart": "alice", "password": PASSWORD, "quotaMb": 40},
        format="json",
    )
    assert response.status_code == 201, response.content
    mailbox_id = response.json()["id"]
    assert not _failed_jobs(), _failed_jobs()
    token = f"snap-{secrets.token_hex(6)}"
    _send(f, f"alice@{DOMAIN}", token)
    _wait_in_node(f, f"/var/mail/vhosts/{DOMAIN}/alice/Maildir/new", token)

    response = client.post("/api/v1/backup/snapshots/now/", {"domain": domain_id}, format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    dataset = f"{pool}/mail/{DOMAIN}"
    listed = f.in_node(IMAP, ["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", dataset])
    manual = [line for line in listed.stdout.split() if "@ums-manual-" in line]
    assert len(manual) == 1, listed.stdout

    # The scheduler finds the hourly, daily and monthly snapshots due: one job, over SSH.
    started = tasks.schedule()["started"]
    assert started == [f.nodes[IMAP].hostname]
    job = Job.objects.filter(kind="backup.snapshot_node").order_by("-pk").first()
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    assert tasks.schedule()["started"] == []  # nothing due any more this hour

    rows = client.get(f"/api/v1/backup/snapshots/?domain={domain_id}").json()["results"]
    assert sorted(r["tier"] for r in rows) == ["daily", "hourly", "manual", "monthly"]
    assert all(r["referencedBytes"] > 0 and r["nodeHostname"] for r in rows)
    rows = client.get(f"/api/v1/backup/snapshots/?mailbox={mailbox_id}").json()["results"]
    assert rows and all(r["path"].endswith("/alice/Maildir/") for r in rows)
    # The message is in the snapshot. zfs-fuse has no .zfs/snapshot folder (OpenZFS has,
    # which is where ``path`` points), so read the snapshot's own data through zfs send.
    manual_name = manual[0]
    sent = f.in_node(
        IMAP,
        ["sh", "-c", 'zfs send "$1" | grep -c -a -- "$2"', "sh", manual_name, token],
        check=False,
    )
    assert sent.returncode == 0 and int(sent.stdout.strip() or 0) >= 1, sent
