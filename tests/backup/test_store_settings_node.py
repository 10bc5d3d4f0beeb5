"""Per mail store settings and exclusions on a real IMAP node (a zfs-fuse pool inside the
node's namespace, the converge fleet of tests/converge): changing the store's compression
through the API converges the node (desired generation bumped, converge job over SSH) and
``zfs get compression`` then shows it on the domain's dataset; an excluded domain gets no
scheduled snapshot on that node and "Snapshot now" is refused."""

from __future__ import annotations

import pytest
from django.urls import reverse

from backup import tasks
from deploy.models import NodeConvergeState
from tests.converge.conftest import (  # noqa: F401  (fixtures)
    controller_key,
    controller_pkey,
    mail_services,
    zone,
)
from tests.converge.fleet import Fleet
from tests.converge.test_mail_store import IMAP, PASSWORD, _failed_jobs, _zfs_get
from tests.fixtures import Cast, token_client
from tests.harness.worker import wait_for
from ums import jobs
from ums.models import Job

from .test_snapshots_node import store_fleet  # noqa: F401  (an IMAP and an SMTP node, a pool)

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]
DOMAIN = "storeset.example"


def test_store_compression_converges_and_excluded_domain_is_left_alone(
    cast: Cast,
    store_fleet: Fleet,  # noqa: F811
) -> None:
    jobs.load_handlers()
    f, pool = store_fleet, store_fleet.pools[IMAP]
    imap = f.nodes[IMAP]
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
    assert not _failed_jobs(), _failed_jobs()
    dataset = f"{pool}/mail/{DOMAIN}"
    # The converge that creates the dataset may be the follow-up of a coalesced one.
    wait_for(lambda: _zfs_get(f, dataset), timeout=90, interval=0.5, what=f"{dataset}")
    assert _zfs_get(f, dataset)["compression"] == "on"  # the global default

    generation = NodeConvergeState.objects.get(node=imap).desired_generation
    response = client.patch(
        f"/api/v1/backup/mail-stores/{imap.pk}/", {"compression": "gzip-9"}, format="json"
    )
    assert response.status_code == 200, response.content
    state = NodeConvergeState.objects.get(node=imap)
    assert state.desired_generation == generation + 1
    job = Job.objects.filter(kind="node.converge", object_id=str(imap.pk)).order_by("-pk").first()
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    assert _zfs_get(f, dataset)["compression"] == "gzip-9"
    assert state.applied_generation >= state.desired_generation  # converged, not dirty
    # A node's ZFS refuses what it does not know: the API refuses it first.
    response = client.patch(
        f"/api/v1/backup/mail-stores/{imap.pk}/", {"compression": "lz4"}, format="json"
    )
    assert response.status_code == 400

    # Excluded: the scheduler starts nothing for the node's only domain, and "Snapshot
    # now" says why; nothing was snapshotted on the node.
    response = client.patch(
        f"/api/v1/backup/exclusions/domains/{domain_id}/", {"excluded": True}, format="json"
    )
    assert response.status_code == 200, response.content
    assert tasks.schedule()["started"] == []
    response = client.post("/api/v1/backup/snapshots/now/", {"domain": domain_id}, format="json")
    assert response.status_code == 400
    listed = f.in_node(IMAP, ["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", dataset])
    assert "@" not in listed.stdout
    # Lifted: due again, and taken over SSH.
    client.patch(
        f"/api/v1/backup/exclusions/domains/{domain_id}/", {"excluded": False}, format="json"
    )
    assert tasks.schedule()["started"] == [imap.hostname]
    listed = f.in_node(IMAP, ["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", dataset])
    assert listed.stdout.count("@ums-") == 3, listed.stdout
