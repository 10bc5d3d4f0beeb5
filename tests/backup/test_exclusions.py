"""Exclusion policies: folder names checked (every bad one at once), customer, domain and
mailbox levels adding up down the tree with their sources, the fixed ``Exclusions``
interface answering from them, the API and portal (scoped: 404 outside; audited), snapshot
lists showing "excluded" in a constant number of queries, "Snapshot now" refused and the
scheduler leaving an excluded domain alone, on a real zfs-fuse pool too."""

from __future__ import annotations

import subprocess

import pytest
from django.core.exceptions import ValidationError
from django.http import Http404

from audit.models import AuditRecord
from backup import actions, exclusion_policy, exclusions, snapshot_run, tasks
from backup.exclusion_actions import set_exclusion
from backup.exclusion_policy import clean_folders, describe, describe_customer, for_domains
from backup.models import Snapshot
from deploy.models import DomainPlacement
from deploy.services.zfs import ZfsService
from tests.api.contracts import COVERED
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain, make_mailbox
from tests.services.localconn import LocalConnector
from tests.services.zfs.test_zfs import _state, pool  # noqa: F401  (the shared pool fixture)
from ums.models import Job

from .test_portal import portal
from .test_snapshots import _domain_data, _imap_node, _snapshot_names, at

pytestmark = pytest.mark.django_db
# Scoping of these routes (outsider: 404, empty list) is tested below.
COVERED.update({"backupexclusion", "customerexclusion", "domainexclusion", "mailboxexclusion"})


def test_folder_names_every_error_at_once() -> None:
    assert clean_folders(["Trash", "INBOX.Junk", "Archive.2025", "Trash", "Корзина"]) == [
        "Trash",
        "Junk",
        "Archive.2025",
        "Корзина",
    ]
    with pytest.raises(ValidationError) as caught:
        clean_folders(["a/b", "..", ".Trash", "Junk.", "x\x07y", "INBOX", " Sent", "", 5, "ok"])
    errors = caught.value.message_dict["folders"]
    assert len(errors) == 9, errors
    for bad in ("'a/b'", "'..'", "'.Trash'", "'Junk.'", "'x\\x07y'", "'INBOX'", "' Sent'"):
        assert any(e.startswith(bad) for e in errors), (bad, errors)
    with pytest.raises(ValidationError):
        clean_folders("Trash")  # a list, not a string
    with pytest.raises(ValidationError):
        clean_folders([f"F{i}" for i in range(51)])


def test_excludes_path_follows_the_maildir_layout() -> None:
    ex = exclusions.Exclusions(mailboxes=frozenset({"bob"}), folders=frozenset({"Trash"}))
    assert ex.excludes_path("bob/Maildir/cur/1.eml")
    assert ex.excludes_path("alice/Maildir/.Trash/cur/1.eml")
    assert ex.excludes_path("alice/Maildir/.Trash.Old/new/2.eml")  # subfolders go with it
    assert not ex.excludes_path("alice/Maildir/.Trashcan/cur/1.eml")
    assert not ex.excludes_path("alice/Maildir/cur/1.eml")  # the inbox stays
    assert not ex.excludes_path("alice/Maildir/.Sent/cur/1.eml")
    assert not ex.excludes_path("")
    assert exclusions.Exclusions(domain_excluded=True).excludes_path("alice/Maildir/cur/1")
    assert exclusions.Exclusions(domain_excluded=True).excludes_path("")


def test_levels_add_up_down_the_tree_with_their_sources(cast: Cast) -> None:
    domain = make_domain(cast.department, "excl.example")
    other = make_domain(cast.shop, "shop.example")
    make_mailbox(domain, "Bob")
    bob = domain.mailboxes.get(local_part__iexact="bob")
    assert exclusions.for_domain(domain) == exclusions.NOTHING

    set_exclusion(actor=cast.sub_admin, customer=cast.government, folders=["Trash"])
    set_exclusion(actor=cast.sub_admin, customer=cast.ministry, folders=["Junk", "Trash"])
    set_exclusion(actor=cast.sub_admin, domain=domain, folders=["Drafts"])
    set_exclusion(actor=cast.sub_admin, mailbox=bob, excluded=True)
    found = exclusions.for_domain(domain)
    assert found.folders == {"Trash", "Junk", "Drafts"}
    assert found.mailboxes == {"bob"} and not found.domain_excluded
    assert found.excludes_path("bob/Maildir/cur/1.eml")
    assert found.excludes_path("alice/Maildir/.Junk/cur/1.eml")
    assert for_domains([other])[other.pk] == exclusions.NOTHING  # a sibling tree: untouched

    described = describe(domain)
    sources = {f["name"]: f["source"]["name"] for f in described["folders"]}
    assert sources == {"Trash": "Government", "Junk": "Ministry", "Drafts": "excl.example"}
    assert described["mailboxes"] == [
        {"local_part": "bob", "source": {"level": "mailbox", "id": bob.pk, "name": bob.email}}
    ]
    # A level below cannot take back what a level above leaves out.
    set_exclusion(actor=cast.sub_admin, customer=cast.ministry, excluded=True)
    set_exclusion(actor=cast.sub_admin, domain=domain, excluded=False)
    assert exclusions.for_domain(domain).domain_excluded
    assert describe(domain)["domain"]["name"] == "Ministry"
    assert describe_customer(cast.department)["excluded"]["name"] == "Ministry"
    assert describe_customer(cast.ministry, upto_parent=True)["excluded"] is None

    with pytest.raises(Http404):
        set_exclusion(actor=cast.sibling_admin, domain=domain, excluded=True)
    with pytest.raises(ValidationError) as caught:
        set_exclusion(actor=cast.sub_admin, mailbox=bob, excluded="yes", folders=["Trash"])
    assert set(caught.value.message_dict) == {"excluded", "folders"}


def test_for_domains_is_one_query(cast: Cast, django_assert_num_queries, monkeypatch) -> None:
    domains = [make_domain(cast.ministry, f"q{i}.example") for i in range(8)]
    set_exclusion(actor=None, customer=cast.government, folders=["Trash"])
    set_exclusion(actor=None, domain=domains[3], excluded=True)
    with django_assert_num_queries(1):
        found = for_domains(domains)
    assert [found[d.pk].domain_excluded for d in domains] == [i == 3 for i in range(8)]
    assert all(found[d.pk].folders == {"Trash"} for d in domains)
    # Past BULK_DOMAINS (the scheduler's every placed domain) it reads every domain and
    # mailbox row instead of an IN list: the same answer.
    monkeypatch.setattr(exclusion_policy, "BULK_DOMAINS", 2)
    other = make_domain(cast.shop, "other-tree.example")
    set_exclusion(actor=None, domain=other, folders=["Spam"])
    with django_assert_num_queries(1):
        assert for_domains(domains) == found


# ---------------------------------------------------------------------------------- API


def test_api_levels_errors_scope_and_audit(cast: Cast) -> None:
    domain = make_domain(cast.ministry, "api-excl.example")
    mailbox = make_mailbox(domain, "carol")
    client = token_client(cast.sub_admin)
    base = "/api/v1/backup/exclusions"

    response = client.patch(
        f"{base}/customers/{cast.government.pk}/", {"folders": ["Trash", "Spam"]}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["own"] == {"excluded": False, "folders": ["Trash", "Spam"]}
    response = client.patch(
        f"{base}/domains/{domain.pk}/",
        {"excluded": "maybe", "folders": ["a/b", "..", "Junk"]},
        format="json",
    )
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) == {"excluded", "folders"} and len(errors["folders"]) == 2
    response = client.patch(f"{base}/domains/{domain.pk}/", {"folders": ["Junk"]}, format="json")
    assert response.status_code == 200, response.content
    effective = response.json()["effective"]
    assert [(f["name"], f["source"]["level"]) for f in effective["folders"]] == [
        ("Trash", "customer"),
        ("Spam", "customer"),
        ("Junk", "domain"),
    ]
    response = client.patch(f"{base}/mailboxes/{mailbox.pk}/", {"excluded": True}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["effective"]["excluded"]["level"] == "mailbox"
    response = client.patch(f"{base}/mailboxes/{mailbox.pk}/", {"folders": ["X"]}, format="json")
    assert response.status_code == 400 and "folders" in response.json()["errors"]
    response = client.patch(f"{base}/mailboxes/{mailbox.pk}/", {"unknown": 1}, format="json")
    assert response.status_code == 400
    rows = client.get(f"{base}/").json()["results"]
    assert sorted(r["level"] for r in rows) == ["customer", "domain", "mailbox"]

    outsider = token_client(cast.sibling_admin)
    for path in (
        f"customers/{cast.government.pk}",
        f"domains/{domain.pk}",
        f"mailboxes/{mailbox.pk}",
    ):
        assert outsider.get(f"{base}/{path}/").status_code == 404
        assert outsider.patch(f"{base}/{path}/", {"excluded": True}, format="json").status_code == (
            404
        )
    assert outsider.get(f"{base}/").json()["results"] == []
    viewer = token_client(cast.ministry_viewer)
    assert viewer.get(f"{base}/domains/{domain.pk}/").status_code == 200
    assert viewer.patch(
        f"{base}/domains/{domain.pk}/", {"excluded": True}, format="json"
    ).status_code in (403, 404)

    records = AuditRecord.objects.filter(action="backup_exclusion.update").order_by("pk")
    assert [r.changes["level"] for r in records] == ["customer", "domain", "mailbox"]
    assert records[1].changes["after"] == {"folders": ["Junk"]}
    assert records[1].object_repr == domain.name
    assert records[1].customer_path == cast.ministry.path


def test_snapshot_lists_show_excluded_in_constant_queries(
    cast: Cast, django_assert_max_num_queries
) -> None:
    node = _imap_node(cast)
    client = token_client(cast.sub_admin)
    domains = [make_domain(cast.ministry, f"list{i}.example") for i in range(6)]
    for domain in domains:
        for hour in range(3):
            Snapshot.objects.create(
                node=node,
                domain=domain,
                customer_path=domain.customer_path,
                dataset=f"tank/mail/{domain.name}",
                name=f"ums-hourly-20261207T0{hour}00Z",
                tier="hourly",
                taken_at=at(hour),
                observed_at=at(hour),
            )
    set_exclusion(actor=None, domain=domains[0], excluded=True)
    set_exclusion(actor=None, customer=cast.ministry, folders=["Trash"])
    bob = make_mailbox(domains[1], "bob")
    set_exclusion(actor=None, mailbox=bob, excluded=True)

    with django_assert_max_num_queries(12):
        rows = client.get("/api/v1/backup/snapshots/?pageSize=100").json()["results"]
    assert len(rows) == 18
    by_domain = {r["domainName"]: r["excluded"] for r in rows}
    assert by_domain["list0.example"] == {"domain": True, "mailboxes": [], "folders": ["Trash"]}
    assert by_domain["list1.example"] == {
        "domain": False,
        "mailboxes": ["bob"],
        "folders": ["Trash"],
    }
    rows = client.get(f"/api/v1/backup/snapshots/?mailbox={bob.pk}").json()["results"]
    assert rows and all(
        r["excluded"] == {"domain": False, "mailbox": True, "folders": ["Trash"]} for r in rows
    )
    one = client.get(f"/api/v1/backup/snapshots/{rows[0]['id']}/").json()
    assert one["excluded"]["mailboxes"] == ["bob"]

    web = portal(cast.sub_admin)
    page = web.get("/backup/domains/").content.decode()
    assert page.count("partly excluded") == 5 and "excluded</span>" in page
    page = web.get(f"/backup/domains/{domains[0].pk}/snapshots/").content.decode()
    assert (
        "This domain is excluded from backups" in page
        and "Ministry" not in page.split("excluded from backups")[0]
    )
    page = web.get(f"/backup/domains/{domains[1].pk}/snapshots/").content.decode()
    assert "<code>bob</code>" in page and "<code>Trash</code>" in page
    response = web.get(f"/backup/domains/{domains[1].pk}/mailbox/", {"local_part": "BOB"})
    assert response.status_code == 302 and response.url == f"/backup/mailboxes/{bob.pk}/snapshots/"
    page = web.get(response.url).content.decode()
    assert "This mailbox is excluded from backups" in page
    assert page.count(f"/{bob.local_part}/Maildir/") == 3  # each snapshot, with its path
    response = web.get(
        f"/backup/domains/{domains[1].pk}/mailbox/", {"local_part": "bob", "exclusions": "1"}
    )
    assert response.url == f"/backup/exclusions/mailboxes/{bob.pk}/"
    response = web.get(f"/backup/domains/{domains[1].pk}/mailbox/", {"local_part": "nobody"})
    assert response.url == f"/backup/domains/{domains[1].pk}/snapshots/"
    outsider = portal(cast.sibling_admin)
    assert outsider.get(f"/backup/mailboxes/{bob.pk}/snapshots/").status_code == 404
    assert (
        outsider.get(f"/backup/domains/{domains[1].pk}/mailbox/", {"local_part": "bob"}).status_code
        == 404
    )


# --------------------------------------------------------------------------- scheduler


def test_snapshot_now_refused_and_scheduler_skips_excluded(cast: Cast, settings) -> None:
    settings.UMS_CONVERGE = {"mail_store_pool": "tank"}
    node = _imap_node(cast)
    kept = make_domain(cast.ministry, "kept.example")
    left = make_domain(cast.department, "left.example")
    for domain in (kept, left):
        DomainPlacement.objects.update_or_create(domain=domain, defaults={"node": node})
    set_exclusion(actor=None, customer=cast.department, excluded=True)
    with pytest.raises(ValidationError) as caught:
        actions.snapshot_domain_now(actor=cast.sub_admin, domain=left)
    assert "excluded from backups (set on Department)" in caught.value.message_dict["domain"][0]
    response = token_client(cast.sub_admin).post(
        "/api/v1/backup/snapshots/now/", {"domain": left.pk}, format="json"
    )
    assert response.status_code == 400
    assert "excluded" in response.json()["errors"]["domain"][0]

    # The kept domain is due: one job. Once it has everything, the excluded one (with
    # nothing at all) does not make the node due.
    assert tasks.schedule(now=at(6))["started"] == [node.hostname]
    Job.objects.filter(kind=actions.SNAPSHOT_JOB).update(status=Job.SUCCEEDED)
    for name in (
        "ums-hourly-20261207T0600Z",
        "ums-daily-20261207T0000Z",
        "ums-monthly-20261201T0000Z",
    ):
        Snapshot.objects.create(
            node=node,
            domain=kept,
            customer_path=kept.customer_path,
            dataset="tank/mail/kept.example",
            name=name,
            tier=name.split("-")[1],
            taken_at=at(6),
            observed_at=at(6),
        )
    assert tasks.schedule(now=at(6))["started"] == []


def test_snapshot_pass_skips_excluded_domain_on_zfs_fuse(pool: str, cast: Cast) -> None:  # noqa: F811
    conn = LocalConnector()
    conf = {"mail_store_pool": pool}
    node = _imap_node(cast)
    kept = make_domain(cast.ministry, "zkept.example")
    left = make_domain(cast.ministry, "zleft.example")
    service = ZfsService()
    state = _state(pool, _domain_data("zkept.example"), _domain_data("zleft.example"))
    service.apply(conn, service.plan(conn, state))
    set_exclusion(actor=cast.sub_admin, domain=left, excluded=True)

    result = snapshot_run.run_node(conn, node, [kept, left], conf=conf, now=at(6))
    assert all(name.startswith(f"{pool}/mail/zkept.example@") for name in result["taken"])
    assert len(result["taken"]) == 3
    assert _snapshot_names(f"{pool}/mail/zleft.example") == []
    assert not any("zleft.example@" in " ".join(argv) for argv in conn.commands)

    # Lifting the exclusion: the next pass takes its snapshots.
    set_exclusion(actor=cast.sub_admin, domain=left, excluded=False)
    snapshot_run.run_node(conn, node, [kept, left], conf=conf, now=at(6))
    assert len(_snapshot_names(f"{pool}/mail/zleft.example")) == 3
    subprocess.run(["zfs", "destroy", "-r", f"{pool}/mail/zleft.example"], check=False)


# ------------------------------------------------------------------------------ portal


def test_portal_exclusion_forms(cast: Cast) -> None:
    domain = make_domain(cast.ministry, "portal-excl.example")
    mailbox = make_mailbox(domain, "dora")
    web = portal(cast.sub_admin)
    assert web.get("/backup/exclusions/").status_code == 200
    url = f"/backup/exclusions/customers/{cast.ministry.pk}/"
    assert web.get(url).status_code == 200
    response = web.post(url, {"excluded": "", "folders": "Trash\r\na/b\r\n..\r\n"})
    assert response.status_code == 200
    page = response.content.decode()
    assert "&#x27;a/b&#x27;" in page and "&#x27;..&#x27;" in page  # both errors shown
    response = web.post(url, {"folders": "Trash\r\nJunk\r\n"})
    assert response.status_code == 302
    page = web.get(f"/backup/exclusions/domains/{domain.pk}/").content.decode()
    assert "<code>Junk</code>" in page and "set on customer Ministry" in page
    response = web.post(f"/backup/exclusions/mailboxes/{mailbox.pk}/", {"excluded": "on"})
    assert response.status_code == 302
    assert exclusions.for_domain(domain).mailboxes == {"dora"}
    page = web.get("/backup/exclusions/").content.decode()
    assert mailbox.email in page and "Ministry" in page

    outsider = portal(cast.sibling_admin)
    assert outsider.get(f"/backup/exclusions/domains/{domain.pk}/").status_code == 404
    assert (
        outsider.post(f"/backup/exclusions/mailboxes/{mailbox.pk}/", {"excluded": "on"}).status_code
        == 404
    )


def test_portal_domain_list_queries_do_not_grow_with_the_page(
    cast: Cast, django_assert_max_num_queries
) -> None:
    web = portal(cast.sub_admin)
    for i in range(3):
        set_exclusion(actor=None, domain=make_domain(cast.ministry, f"a{i}.example"), excluded=True)
    web.get("/backup/domains/")  # warm the session and the caches
    with django_assert_max_num_queries(25) as few:
        web.get("/backup/domains/")
    for i in range(12):
        set_exclusion(actor=None, domain=make_domain(cast.ministry, f"b{i}.example"), excluded=True)
    with django_assert_max_num_queries(len(few.captured_queries)):
        page = web.get("/backup/domains/").content.decode()
    assert page.count(">excluded</span>") == 15
