"""The ZFS mail store driven by converge, on a real zfs-fuse pool inside a real IMAP node.

API -> converge -> dataset per domain (compression, quota = its mailboxes' quotas) mounted
at the domain's Maildir folder -> Postfix on the SMTP node relays -> Postfix virtual(8)
on the IMAP node writes the message into the dataset. A second converge changes
nothing; a dry run lists the zfs commands without running them; deleting the domain
keeps its dataset (and its mail) and the converge result lists it as an orphan.
"""

from __future__ import annotations

import smtplib
import time
from email.message import EmailMessage

import paramiko
import pytest
from django.urls import reverse

from deploy.services import registry
from deploy.services.zfs import SERVICE as ZFS
from servers.models import Zone
from tests.fixtures import Cast, token_client

from .fleet import Fleet, fleet, new_pool_name

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

PASSWORD = "Tulip-Anvil-Sonnet-58"
DOMAIN = "zstore.example"
SECOND = "later.example"
IMAP, SMTP = 0, 1


def _zfs_get(f: Fleet, dataset: str) -> dict[str, str]:
    out = f.in_node(
        IMAP,
        [
            "zfs",
            "get",
            "-Hp",
            "-o",
            "property,value",
            "compression,quota,mountpoint,mounted,type",
            dataset,
        ],
        check=False,
    )
    if out.returncode != 0:
        return {}
    return dict(line.split("\t") for line in out.stdout.splitlines())


def _converge(client, node, *, dry_run: bool = False) -> dict:
    from ums.models import Job

    response = client.post(
        reverse("node-converge", args=[node.pk]), {"dryRun": dry_run}, format="json"
    )
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    return job.result


def _failed_jobs() -> list[str]:
    from ums.models import Job

    return [f"{j.title}: {j.error[-3000:]}" for j in Job.objects.filter(status=Job.FAILED)]


def _send(f: Fleet, to: str, marker: str) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "bob@outside.test", to, marker
    message.set_content(f"hello {marker}\n")
    with smtplib.SMTP(f.tnodes[SMTP].address, 25, timeout=30) as smtp:
        smtp.send_message(message)


def _wait_in_node(f: Fleet, folder: str, marker: str, timeout: float = 60) -> str:
    """The message carrying ``marker`` as the IMAP node's own processes see it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = f.in_node(IMAP, ["grep", "-rl", "--", marker, folder], check=False)
        if found.returncode == 0:
            return found.stdout.splitlines()[0]
        time.sleep(0.3)
    log = f.tnodes[SMTP].path("/var/spool/postfix/maillog")
    ilog = f.tnodes[IMAP].path("/var/spool/postfix/maillog")
    raise AssertionError(
        f"{marker} not delivered into {folder}\n{_failed_jobs()}\n--- smtp ---\n"
        f"{log.read_text() if log.exists() else ''}\n--- imap ---\n"
        f"{ilog.read_text() if ilog.exists() else ''}"
    )


@pytest.fixture
def store_fleet(
    tmp_path_factory: pytest.TempPathFactory,
    controller_pkey: paramiko.PKey,
    controller_key,
    zone: Zone,
    cast: Cast,
    mail_services: None,
    settings,
    monkeypatch: pytest.MonkeyPatch,
):
    pool = new_pool_name()
    # The mail services conftest.py converges, with the mail store in front of them.
    monkeypatch.setattr(registry, "SERVICES", [ZFS, *registry.SERVICES])
    settings.UMS_CONVERGE = {
        **settings.UMS_CONVERGE,
        "mail_store_pool": pool,
        "mail_store_compression": "gzip",
    }
    with fleet(
        tmp_path_factory, controller_pkey, zone, cast, [["imap"], ["smtp"]], zfs={IMAP: pool}
    ) as f:
        yield f


def test_mail_store_dataset_per_domain_holds_the_delivered_mail(
    cast: Cast, store_fleet: Fleet, settings
) -> None:
    f, pool = store_fleet, store_fleet.pools[IMAP]
    imap_node = f.nodes[IMAP]
    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("customer-list"),
        {"name": "Store Customer", "parent": cast.government.pk},
        format="json",
    )
    assert response.status_code == 201, response.content
    customer_id = response.json()["id"]
    response = client.post(
        reverse("mail-domain-list"), {"name": DOMAIN, "customer": customer_id}, format="json"
    )
    assert response.status_code == 201, response.content
    domain = response.json()
    mailbox_ids = []
    for local, quota in (("alice", 40), ("carol", 24)):
        response = client.post(
            reverse("mail-mailbox-list"),
            {"domain": domain["id"], "localPart": local, "password": PASSWORD, "quotaMb": quota},
            format="json",
        )
        assert response.status_code == 201, response.content
        mailbox_ids.append(response.json()["id"])
    assert not _failed_jobs(), _failed_jobs()

    # One dataset for the domain: the configured compression, the sum of its mailboxes'
    # quotas, mounted (in the node) where Postfix and Courier keep the domain's Maildirs.
    dataset = f"{pool}/mail/{DOMAIN}"
    props = _zfs_get(f, dataset)
    assert props == {
        "compression": "gzip",
        "quota": str((40 + 24) * 1024 * 1024),
        "mountpoint": f"/var/mail/vhosts/{DOMAIN}",
        "mounted": "yes",
        "type": "filesystem",
    }
    maildir = f"/var/mail/vhosts/{DOMAIN}/alice/Maildir"
    source = f.in_node(IMAP, ["findmnt", "-n", "-o", "SOURCE", "-T", maildir]).stdout.strip()
    assert source == dataset

    # Mail is delivered into the dataset: the IMAP node sees it there, while the plain
    # directory beneath the mountpoint (what the node had without ZFS) stays empty.
    _send(f, f"alice@{DOMAIN}", "marker-zfs-1")
    delivered = _wait_in_node(f, f"{maildir}/new", "marker-zfs-1")
    assert f.in_node(IMAP, ["findmnt", "-n", "-o", "SOURCE", "-T", delivered]).stdout.strip() == (
        dataset
    )
    beneath = f.tnodes[IMAP].path(f"/var/mail/vhosts/{DOMAIN}")
    assert not beneath.exists() or not any(beneath.iterdir())

    # A second converge has nothing to do, and says which storage the node uses.
    result = _converge(client, imap_node)
    assert result["changed"] == {} and result["prepared"] == {}, result
    assert result["reports"]["zfs"]["storage"] == "zfs"
    assert result["reports"]["zfs"]["orphans"] == []

    # Dry run of a domain added without converging: the zfs commands, nothing run.
    settings.UMS_AUTO_CONVERGE = False
    response = client.post(
        reverse("mail-domain-list"), {"name": SECOND, "customer": customer_id}, format="json"
    )
    assert response.status_code == 201, response.content
    second = response.json()
    response = client.post(
        reverse("mail-mailbox-list"),
        {"domain": second["id"], "localPart": "dave", "password": PASSWORD, "quotaMb": 16},
        format="json",
    )
    assert response.status_code == 201, response.content
    planned = _converge(client, imap_node, dry_run=True)
    assert planned["prepared"]["zfs"] == [
        f"zfs create -o compression=gzip -o dedup=off -o quota=16M "
        f"-o mountpoint=/var/mail/vhosts/{SECOND} {pool}/mail/{SECOND}"
    ]
    assert _zfs_get(f, f"{pool}/mail/{SECOND}") == {}
    applied = _converge(client, imap_node)
    assert applied["prepared"] == planned["prepared"]
    assert _zfs_get(f, f"{pool}/mail/{SECOND}")["quota"] == str(16 * 1024 * 1024)
    settings.UMS_AUTO_CONVERGE = True

    # Deleting the domain (mailboxes first, as the API requires) keeps its dataset and
    # the mail in it; converge lists it as an orphan and plans no destroy.
    for pk in mailbox_ids:
        response = client.delete(reverse("mail-mailbox-detail", args=[pk]))
        assert response.status_code == 204, response.content
    response = client.delete(reverse("mail-domain-detail", args=[domain["id"]]))
    assert response.status_code == 204, response.content
    assert not _failed_jobs(), _failed_jobs()
    result = _converge(client, imap_node)
    assert result["reports"]["zfs"]["orphans"] == [dataset]
    assert result["prepared"] == {}
    assert _zfs_get(f, dataset)["mounted"] == "yes"
    kept = f.in_node(IMAP, ["cat", delivered]).stdout
    assert "hello marker-zfs-1" in kept
