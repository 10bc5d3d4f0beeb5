"""Verification of copies on a backup node, on real parts: two sshd nodes in namespaces,
each with its own zfs-fuse pool (tests/converge/fleet.py, as the off-node copy tests use).

A domain dataset with three snapshots on the source node is copied to the backup node by
the real relay (``offnode.copy_to_node``: zfs send | zfs receive) and recorded as a copy
pass records it (with each snapshot's GUID). "Verify copies" (the copy's API action, a
job) then checks each kept snapshot's GUID on the backup node and reads the series with
``zfs send`` into /dev/null there: a sound copy passes and the node's data is unchanged;
a destroyed snapshot fails the copy naming it; a snapshot re-created under the same name
(other data) fails on its GUID; the failure is stored, shown on the domain's page and
alerted on the source node, and resolved once the copy passes again. Blocks overwritten
in the backup pool's disk image fail the read ("Input/output error" from zfs send), with
every snapshot and GUID still in place.
"""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from backup import offnode, offnode_run, offnode_verify_run
from backup.models_offnode import OffnodeCopy
from deploy.nodes import session
from deploy.services import registry
from deploy.services.zfs import SERVICE as ZFS
from servers.models import NodeAlert, Zone
from tests.converge.conftest import (  # noqa: F401  (fixtures)
    controller_key,
    controller_pkey,
    zone,
)
from tests.converge.fleet import Fleet, fleet, new_pool_name
from tests.fixtures import Cast, token_client
from tests.harness.worker import wait_for
from tests.mail.helpers import make_domain
from ums import jobs
from ums.models import Job

from .test_offnode_node import _guid, _snaps
from .test_portal import portal

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]
DOMAIN = "nodeverify.example"
SOURCE, BACKUP = 0, 1
SNAPS = ["ums-daily-20261201T0000Z", "ums-daily-20261202T0000Z", "ums-daily-20261203T0000Z"]
LAST = "ums-daily-20261204T0000Z"
MARK = b"UMS-VERIFY2-DAMAGE-MARK"


@pytest.fixture
def two_pools(
    tmp_path_factory: pytest.TempPathFactory,
    controller_pkey: paramiko.PKey,  # noqa: F811
    controller_key,  # noqa: F811
    zone: Zone,  # noqa: F811
    cast: Cast,
    monkeypatch: pytest.MonkeyPatch,
):
    # Only ZFS: these nodes hold datasets, no mail service is needed to copy or verify.
    monkeypatch.setattr(registry, "SERVICES", [ZFS])
    roles = [["backup"], ["backup"]]
    pools = {SOURCE: new_pool_name(), BACKUP: new_pool_name()}
    with fleet(tmp_path_factory, controller_pkey, zone, cast, roles, zfs=pools) as f:
        yield f


def _verify(cast: Cast, copy: OffnodeCopy) -> Job:
    response = token_client(cast.sub_admin).post(f"/api/v1/backup/offnode-copies/{copy.pk}/verify/")
    assert response.status_code == 202, response.content
    return Job.objects.get(pk=response.json()["id"])


def test_backup_node_copies_are_verified_by_guid_and_read(
    cast: Cast, two_pools: Fleet, tmp_path_factory: pytest.TempPathFactory
) -> None:
    jobs.load_handlers()
    f = two_pools
    source = f"{f.pools[SOURCE]}/mail/{DOMAIN}"
    copy_name = f"{f.pools[BACKUP]}/copies/{DOMAIN}"
    mounted = "/var/tmp/nodeverify"
    f.in_node(SOURCE, ["zfs", "create", "-p", "-o", f"mountpoint={mounted}", source])
    wait_for(
        lambda: (
            f.in_node(
                SOURCE, ["grep", "-q", f" {mounted} ", "/proc/mounts"], check=False
            ).returncode
            == 0
        ),
        timeout=30,
        interval=0.5,
        what="the source dataset mounted",
    )
    for n, snap in enumerate(SNAPS):
        # Data in each snapshot (random: the streams cannot be compressed away).
        f.in_node(SOURCE, ["dd", "if=/dev/urandom", f"of={mounted}/file{n}", "bs=64k", "count=16"])
        f.in_node(SOURCE, ["sync"])
        f.in_node(SOURCE, ["zfs", "snapshot", f"{source}@{snap}"])
    domain = make_domain(cast.ministry, DOMAIN)
    with session(f.nodes[SOURCE]) as src, session(f.nodes[BACKUP]) as dst:
        result = offnode.copy_to_node(src, dst, source, copy_name, {"enabled": False})
    assert result["snapshots"] == SNAPS
    offnode_run.record(
        domain,
        f.nodes[SOURCE],
        kind=OffnodeCopy.NODE,
        location=copy_name,
        backup_node=f.nodes[BACKUP],
        snapshots=result["snapshots"],
        guids=result["guids"],
        bytes_sent=result["bytes"],
    )
    copy = OffnodeCopy.objects.get(domain_name=DOMAIN, kind=OffnodeCopy.NODE)
    # The GUIDs recorded are the received snapshots' (the same as the source's).
    for snap in SNAPS:
        assert copy.guids[snap] == _guid(f, BACKUP, f"{copy_name}@{snap}")
        assert copy.guids[snap] == _guid(f, SOURCE, f"{source}@{snap}")

    state = ["zfs", "get", "-H", "-p", "-r", "-o", "name,property,value", "guid,referenced"]
    before = f.in_node(BACKUP, [*state, copy_name])
    job = _verify(cast, copy)
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    assert job.result["verified"] == 1 and job.result["snapshots"] == len(SNAPS)
    copy.refresh_from_db()
    assert copy.verify_ok is True and copy.verified_at and copy.verify_message == ""
    # Nothing changed on the node: the same snapshots (GUIDs), the same data size.
    assert _snaps(f, BACKUP, copy_name) == SNAPS
    assert f.in_node(BACKUP, [*state, copy_name]).stdout == before.stdout

    # The middle snapshot destroyed on the backup node: reported with its name.
    middle = f"{copy_name}@{SNAPS[1]}"
    f.in_node(BACKUP, ["zfs", "destroy", middle])
    job = _verify(cast, copy)
    assert job.status == Job.FAILED and middle in job.error
    copy.refresh_from_db()
    assert copy.verify_ok is False and f"{middle}: missing" in copy.verify_message
    alert = NodeAlert.objects.get(node=f.nodes[SOURCE], kind=offnode_verify_run.ALERT_KIND)
    assert alert.resolved_at is None and middle in alert.message
    page = portal(cast.sub_admin).get(f"/backup/domains/{domain.pk}/snapshots/").content
    assert "verification failed" in page.decode() and middle in page.decode()

    # Re-created under the same name: the name is there, the received data is not.
    f.in_node(BACKUP, ["zfs", "snapshot", middle])
    job = _verify(cast, copy)
    assert job.status == Job.FAILED
    copy.refresh_from_db()
    assert f"{middle}: GUID" in copy.verify_message
    assert copy.guids[SNAPS[1]] in copy.verify_message

    # The copy as a pass records it now (the re-created snapshot is what it holds):
    # it passes again and the alert is resolved.
    with session(f.nodes[BACKUP]) as dst:
        from backup import offnode_zfs

        held = offnode_zfs.list_snaps(dst, copy_name) or []
    OffnodeCopy.objects.filter(pk=copy.pk).update(guids={s.name: s.guid for s in held})
    assert _verify(cast, copy).status == Job.SUCCEEDED
    alert.refresh_from_db()
    assert alert.resolved_at is not None

    # Damaged blocks: a file of a known pattern copied over, then its blocks overwritten
    # in the backup pool's image file while the pool is exported (so no cached copy
    # hides the damage): every snapshot is still there with its GUID, but the read fails.
    f.in_node(SOURCE, ["sh", "-c", f"yes {MARK.decode()} | head -c 2097152 > {mounted}/marked"])
    f.in_node(SOURCE, ["sync"])
    f.in_node(SOURCE, ["zfs", "snapshot", f"{source}@{LAST}"])
    with session(f.nodes[SOURCE]) as src, session(f.nodes[BACKUP]) as dst:
        result = offnode.copy_to_node(src, dst, source, copy_name, {"enabled": False})
    OffnodeCopy.objects.filter(pk=copy.pk).update(
        snapshots=result["snapshots"], guids=result["guids"], last_snapshot=LAST
    )
    pool = f.pools[BACKUP]
    (image,) = list(tmp_path_factory.getbasetemp().glob(f"**/{pool}.img"))
    f.in_node(BACKUP, ["zpool", "export", pool])
    assert _overwrite(image, MARK) > 0
    f.in_node(BACKUP, ["zpool", "import", "-d", str(image.parent), pool])
    job = _verify(cast, copy)
    assert job.status == Job.FAILED
    copy.refresh_from_db()
    assert copy.verify_ok is False and "cannot be read" in copy.verify_message
    assert copy.verify_message.startswith(f"{copy_name}@")
    assert "missing" not in copy.verify_message and "GUID" not in copy.verify_message


def _overwrite(image: Path, mark: bytes) -> int:
    """Overwrite each occurrence of ``mark`` in ``image`` (the pool's disk); how many."""
    data = bytearray(image.read_bytes())
    count, at = 0, data.find(mark)
    while at >= 0:
        data[at : at + len(mark)] = b"X" * len(mark)
        count += 1
        at = data.find(mark, at + len(mark))
    image.write_bytes(bytes(data))
    return count
