"""Permanent deletion finds the staging dataset a given-up rebuild from a Maildir archive
left on the new node (``<pool>/ums-rebuild-<domain>``, backup/rebuild_archive.py), lists
it and destroys it. Real zfs-fuse (a private daemon, as the restore clone holder's test);
the node's SSH session is replaced by the namespace connector of that daemon."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest

from backup import holders
from backup.offnode_actions import REBUILD_JOB
from backup.rebuild_holder import RebuildStagingHolder
from tests.fixtures import Cast
from tests.mail.helpers import make_domain, make_mailbox
from ums.models import Job

from .privzfs import NsConnector, private_zfs
from .test_snapshots import _imap_node

pytestmark = pytest.mark.django_db


def test_purge_finds_and_destroys_a_given_up_rebuilds_staging_dataset(
    cast: Cast, tmp_path: Path, settings
) -> None:
    assert any(h.name == "rebuild_staging" for h in holders.holders())  # registered
    domain = make_domain(cast.ministry, "staged.example")
    make_mailbox(domain, "alice")
    lost = _imap_node(cast, "imap-lost.example.org")
    new = lost.__class__.objects.create(
        customer=cast.government,
        customer_path=cast.government.path,
        zone=lost.zone,
        hostname="imap-new.example.org",
        ssh_address="192.0.2.31",
        status=lost.status,
        roles=["imap"],
    )
    Job.objects.create(
        kind=REBUILD_JOB,
        title="rebuild",
        status="failed",
        customer_path=cast.government.path,
        params={"node_id": lost.pk, "new_node_id": new.pk, "domain_ids": [domain.pk]},
    )
    with private_zfs(tmp_path) as zfs:
        conn = NsConnector(zfs)
        seen: list[str] = []

        def connect(node):
            seen.append(node.hostname)
            return nullcontext(conn)

        holder = RebuildStagingHolder(connect=connect)
        settings.UMS_CONVERGE = {**settings.UMS_CONVERGE, "mail_store_pool": ""}
        assert holder.find(domain, "alice") == [] and seen == []  # no pool, no rebuilds
        settings.UMS_CONVERGE = {**settings.UMS_CONVERGE, "mail_store_pool": zfs.pool}
        assert holder.find(domain, "alice") == []
        assert seen == ["imap-new.example.org"]  # the rebuild's new node is searched
        stage = f"{zfs.pool}/ums-rebuild-{domain.name}"
        mountpoint = tmp_path / "stage"
        zfs.run("zfs", "create", "-o", f"mountpoint={mountpoint}", stage)
        zfs.run("zfs", "create", f"{zfs.pool}/ums-rebuild-other.example")  # not this domain
        maildir = zfs.path(mountpoint / "alice" / "Maildir" / "cur")
        maildir.mkdir(parents=True)
        (maildir / "1.M1.host:2,S").write_text("Subject: token-staged\n\nbody\n")
        [copy] = holder.find(domain, "alice")
        assert copy.ref == {"node": new.pk, "dataset": stage}
        assert "imap-new.example.org" in copy.description
        assert copy.also_removes  # the whole domain's mail is in it
        holder.destroy(copy, domain, "alice", log=lambda line: None)
        holder.destroy(copy, domain, "alice", log=lambda line: None)  # idempotent
        assert holder.find(domain, None) == []
        names = zfs.run("zfs", "list", "-H", "-o", "name").stdout.split()
        assert stage not in names and f"{zfs.pool}/ums-rebuild-other.example" in names
