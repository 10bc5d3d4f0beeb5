"""Storage tiering without a node: the policy's checks (API and portal, every error at
once), "Tier now" audited and refused without a policy, the scheduled pass, bytes per tier
on the API (scoped) and the domain page, and the restore program following a tier link
(and only a tier link) on real files. The node tests (test_tiering_node.py) prove the
rest with Courier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.utils import timezone

from audit.models import AuditRecord
from backup import tiering
from backup.models import BackupTarget, MailStoreSettings, TierUsage
from backup.restore_node import PROGRAM as RESTORE_PROGRAM
from deploy.models import DomainPlacement
from servers.models import Node
from tests.api.contracts import COVERED
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain
from ums.models import Job

from .test_portal import portal
from .test_snapshots import _imap_node

pytestmark = pytest.mark.django_db
COVERED.add("tierusage")  # outsider: test_tier_usage_is_scoped_and_shown_on_the_domain_page


def _target(cast: Cast, kind: str = "s3", customer=None) -> BackupTarget:
    customer = customer or cast.ministry
    fields = (
        {"s3_endpoint": "http://192.0.2.9:9000", "s3_bucket": "tier", "s3_access_key": "ak"}
        if kind == "s3"
        else {"nfs_path": "/mnt/backup"}
    )
    return BackupTarget.objects.create(
        customer=customer,
        customer_path=customer.path,
        name=f"t-{kind}-{customer.pk}",
        kind=kind,
        s3_secret_key="sk" if kind == "s3" else "",
        **fields,
    )


def test_policy_is_checked_every_error_at_once(cast: Cast) -> None:
    node = _imap_node(cast)
    client = token_client(cast.sub_admin)
    url = f"/api/v1/backup/mail-stores/{node.pk}/"
    response = client.patch(
        url,
        {"tierDays": 0, "tierKind": "tape", "tierPath": "/var/mail/vhosts/tier"},
        format="json",
    )
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"tierDays", "tierKind", "tierPath"}
    # A kind needs its place: a folder, or an S3 backup target the admin can see.
    response = client.patch(url, {"tierDays": 30, "tierKind": "folder"}, format="json")
    assert response.status_code == 400 and "tierPath" in response.json()["errors"]
    response = client.patch(url, {"tierDays": 30, "tierKind": "s3"}, format="json")
    assert response.status_code == 400 and "tierTarget" in response.json()["errors"]
    nfs = _target(cast, "nfs")
    response = client.patch(
        url, {"tierDays": 30, "tierKind": "s3", "tierTarget": nfs.pk}, format="json"
    )
    assert response.status_code == 400 and "tierTarget" in response.json()["errors"]
    foreign = _target(cast, "s3", customer=cast.isp)
    response = client.patch(
        url, {"tierDays": 30, "tierKind": "s3", "tierTarget": foreign.pk}, format="json"
    )
    assert response.status_code == 400 and "tierTarget" in response.json()["errors"]
    assert not MailStoreSettings.objects.filter(node=node, tier_days__isnull=False).exists()

    s3 = _target(cast, "s3")
    response = client.patch(
        url, {"tierDays": 30, "tierKind": "s3", "tierTarget": s3.pk}, format="json"
    )
    assert response.status_code == 200, response.content
    own = response.json()["own"]
    assert (own["tierDays"], own["tierKind"], own["tierTarget"], own["tierRecall"]) == (
        30,
        "s3",
        s3.pk,
        False,
    )
    record = AuditRecord.objects.filter(action="mail_store.update").latest("pk")
    assert "tier_days" in json.dumps(record.changes)
    row = MailStoreSettings.objects.get(node=node)
    spec = tiering.mount_spec(row, (5000, 5000))
    assert spec["point"] == f"{tiering.MOUNT_ROOT}/s3-{s3.pk}" and spec["secret_key"] == "sk"
    assert tiering.tier_root(row) == spec["point"]


def test_tier_now_audited_and_refused_without_policy(cast: Cast, settings) -> None:
    node = _imap_node(cast)
    client = token_client(cast.sub_admin)
    url = f"/api/v1/backup/mail-stores/{node.pk}/tier-now/"
    assert client.post(url, format="json").status_code == 400
    MailStoreSettings.objects.create(
        node=node,
        customer_path=node.customer_path,
        tier_days=10,
        tier_kind="folder",
        tier_path="/srv/tier",
    )
    settings.UMS_TASKS_IN_PROCESS = False  # the job is only queued: no node to reach
    response = client.post(url, format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.kind == tiering.TIER_JOB and job.params == {"node_id": node.pk}
    assert AuditRecord.objects.filter(action=tiering.AUDIT_TIER_NOW).count() == 1
    # Outside the administrator's subtree: 404, as a lookup would answer.
    assert token_client(cast.sibling_admin).post(url, format="json").status_code == 404

    # The scheduled pass: one job per store with a policy, none while one is pending.
    other = Node.objects.create(
        customer=cast.government,
        customer_path=cast.government.path,
        zone=node.zone,
        hostname="imap2.example.org",
        ssh_address="192.0.2.31",
        status=node.status,
        roles=["imap"],
    )
    assert tiering.schedule()["started"] == []  # node 1 has one pending; node 2 no policy
    Job.objects.filter(pk=job.pk).update(status=Job.SUCCEEDED)
    assert tiering.schedule()["started"] == [node.hostname]
    assert other.hostname not in tiering.schedule()["started"]


def test_tier_usage_is_scoped_and_shown_on_the_domain_page(cast: Cast) -> None:
    node = _imap_node(cast)
    domain = make_domain(cast.ministry, "tiered.example")
    DomainPlacement.objects.get_or_create(domain=domain, defaults={"node": node})
    TierUsage.objects.create(
        domain=domain,
        node=node,
        customer_path=domain.customer_path,
        primary_bytes=5 * 1024**2,
        primary_messages=10,
        tier_bytes=3 * 1024**3,
        tier_messages=12345,
        tier_kind="s3",
        measured_at=timezone.now(),
    )
    rows = token_client(cast.sub_admin).get("/api/v1/backup/tier-usage/").json()["results"]
    assert [(r["domainName"], r["tierMessages"], r["tierBytes"]) for r in rows] == [
        ("tiered.example", 12345, 3 * 1024**3)
    ]
    outsider = token_client(cast.sibling_admin)
    assert outsider.get("/api/v1/backup/tier-usage/").json()["results"] == []
    assert outsider.get(f"/api/v1/backup/tier-usage/{rows[0]['id']}/").status_code == 404
    page = portal(cast.sub_admin).get(f"/mail/domains/{domain.pk}/")
    text = page.content.decode()
    assert "Storage tiers" in text and "3.0\xa0GB" in text and "12345" in text


def test_store_form_sets_the_policy_and_offers_tier_now(cast: Cast) -> None:
    node = _imap_node(cast)
    client = portal(cast.sub_admin)
    page = client.get(f"/backup/mail-stores/{node.pk}/")
    assert page.status_code == 200 and "Tier now" not in page.content.decode()
    response = client.post(
        f"/backup/mail-stores/{node.pk}/",
        {"tier_days": "45", "tier_kind": "folder", "tier_path": "/srv/ums-tier", "enabled": ""},
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    row = MailStoreSettings.objects.get(node=node)
    assert (row.tier_days, row.tier_kind, row.tier_path) == (45, "folder", "/srv/ums-tier")
    assert "Tier now" in client.get(f"/backup/mail-stores/{node.pk}/").content.decode()


def _maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def test_restore_follows_tier_links_and_only_those(tmp_path: Path) -> None:
    """The restore program on real files: a snapshot's link into the tier is restored as
    a plain file with the tier copy's bytes; a link elsewhere is never followed."""
    tier = tmp_path / "tier"
    (tier / "d" / "alice" / "INBOX").mkdir(parents=True)
    copy = tier / "d" / "alice" / "INBOX" / "1700000000.M1P1.h"
    copy.write_bytes(b"Subject: tiered\r\n\r\n" + bytes(range(256)) * 10)
    secret = tmp_path / "secret"
    secret.write_bytes(b"root-only")
    snap = _maildir(tmp_path / "snap" / "alice" / "Maildir")
    os.symlink(copy, snap / "cur" / "1700000000.M1P1.h:2,S")
    os.symlink(secret, snap / "cur" / "1700000001.M2P1.h:2,S")
    (snap / "cur" / "1700000002.M3P1.h:2,").write_bytes(b"Subject: plain\r\n\r\nx")
    root = tmp_path / "mail"
    live = _maildir(root / "d" / "alice" / "Maildir")
    args = {
        "op": "restore",
        "tier_roots": [str(tier)],
        "mode": "in_place",
        "root": str(root),
        "source_root": str(tmp_path / "snap"),
        "source": str(snap),
        "maildir": str(live),
        "stage": str(root / "d" / "alice" / ".ums-restore-1"),
        "folders": [["", ""]],
        "quota": None,
        "budget": 30,
    }
    result = subprocess.run(
        [sys.executable, "-c", RESTORE_PROGRAM],
        input=json.dumps(args).encode(),
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["copied"] == 2
    restored = {p.name: p for p in (live / "cur").iterdir()}
    assert set(restored) == {"1700000000.M1P1.h:2,S", "1700000002.M3P1.h:2,"}
    tiered = restored["1700000000.M1P1.h:2,S"]
    assert not tiered.is_symlink() and tiered.read_bytes() == copy.read_bytes()


@pytest.mark.parametrize("kind", ["export", "archive"])
def test_maildir_tars_carry_tiered_messages_not_links(tmp_path: Path, kind: str) -> None:
    """Exports and off-node Maildir archives (real GNU tar, their own argument lists)
    hold a tiered message's bytes."""
    import io
    import tarfile

    from backup.export_stream import tar_argv as export_tar
    from backup.offnode_archive import tar_argv as archive_tar

    tier = tmp_path / "tier"
    tier.mkdir()
    copy = tier / "1700000000.M1P1.h"
    copy.write_bytes(b"Subject: tiered\r\n\r\nbody\r\n")
    maildir = _maildir(tmp_path / "d" / "alice" / "Maildir")
    os.symlink(copy, maildir / "cur" / "1700000000.M1P1.h:2,S")
    base = str(tmp_path / "d")
    if kind == "export":
        out = subprocess.run(export_tar(base, ["alice/Maildir"]), capture_output=True, check=True)
    else:
        # The archive names every folder and file, as a pass lists them (find -L through
        # the tier's links, then the chain's plan of a first, full archive).
        from backup import archive_chain as chain

        listing = subprocess.run(chain.tree_argv(base), capture_output=True, check=True)
        dirs, files = chain.tree(listing.stdout.decode(), ["alice"])
        copy_names, _index = chain.plan(dirs, files, "first.tar", None)
        names = b"".join(p.encode() + b"\0" for p in copy_names)
        out = subprocess.run(archive_tar(base), input=names, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith(":2,S"))
        assert member.isfile()
        assert archive.extractfile(member).read() == copy.read_bytes()


def test_held_and_remove_find_copies_whose_links_are_gone(tmp_path: Path) -> None:
    """A permanent purge's view of a folder tier (the node program on real files): the
    mailbox's copies, expunged ones included, are counted and removed; others stay."""
    from backup.tier_node import PROGRAM as TIER_PROGRAM

    tier = tmp_path / "tier"
    for local, count in (("alice", 3), ("bob", 2)):
        folder = tier / "d.example" / local / "INBOX"
        folder.mkdir(parents=True)
        for i in range(count):
            (folder / f"17000000{i}.M{i}P1.h").write_bytes(b"x" * 100)

    def run(op: str, local: str | None) -> dict:
        args = {
            "op": op,
            "mount": {"kind": "folder", "point": str(tier)},
            "domain": "d.example",
            "local": local,
        }
        out = subprocess.run(
            [sys.executable, "-c", TIER_PROGRAM],
            input=json.dumps(args).encode(),
            capture_output=True,
            check=True,
        )
        return json.loads(out.stdout)

    assert run("held", "alice") == {"copies": 3, "bytes": 300}
    assert run("held", None) == {"copies": 5, "bytes": 500}
    assert run("remove", "alice") == {"removed": 3}
    assert not (tier / "d.example" / "alice").exists()
    assert run("held", "alice") == {"copies": 0, "bytes": 0}
    assert run("held", None)["copies"] == 2  # bob's stay
