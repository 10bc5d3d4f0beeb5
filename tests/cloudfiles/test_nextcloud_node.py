"""Cloud files provisioning end to end against the Nextcloud STAND-IN on a real node.

STAND-IN: Nextcloud cannot be installed on these machines (a PHP application with its own
database), so the cloudfiles node runs tests/standins/nextcloud/standin.py, which
implements the occ command lines and OCS APIs the product uses with Nextcloud's
documented shapes. The node (namespaced sshd), SSH, converge, jobs, API and the HTTP
client are the real ones; the product code is what runs against a real Nextcloud.
"""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from audit.models import AuditRecord
from mail.models import Mailbox
from tests.api.test_servers_api import make_node
from tests.fixtures import Cast
from ums.models import Job

from .conftest import CloudNode
from .helpers import (
    app_password,
    assert_jobs_succeeded,
    client_for,
    create_share,
    customer,
    domain,
    mailbox,
)

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]


def group_of(cloud: CloudNode, uid: str) -> list[str]:
    return sorted(g for g, members in cloud.nextcloud.state()["groups"].items() if uid in members)


def test_files_flag_provisions_an_account_with_quota_group_policy_and_antivirus(
    cast: Cast, cloud_node: CloudNode, settings
) -> None:
    # An office node of the same tree (a database row: Collabora cannot run here) and the
    # load balancers' office name: Nextcloud Office is pointed at them.
    office = make_node(cloud_node.node.customer, "office1.example.org")
    office.roles, office.addresses = ["office"], ["192.0.2.30"]
    office.save()
    settings.UMS_CONVERGE = {
        **settings.UMS_CONVERGE,
        "web_hostnames": {"office": "office.example.org"},
    }
    client = client_for(cast)
    cid = customer(client, cast, "Files Customer")
    dom = domain(client, cid, "files.example")
    mailbox(client, dom, "alice", files=True, quotaMb=2048)
    mailbox(client, dom, "bob", files=False)
    assert_jobs_succeeded()

    state = cloud_node.nextcloud.state()
    users = state["users"]
    assert set(users) == {"alice@files.example"}, users  # bob has no cloud files
    alice = users["alice@files.example"]
    assert alice["quota"] == "2048 MB" and alice["enabled"] and alice["password_set"]
    assert group_of(cloud_node, "alice@files.example") == [f"ums-c{cid}"]
    assert state["group_names"][f"ums-c{cid}"] == "Files Customer"
    core = state["config"]["core"]
    assert core["shareapi_allow_links"] == "yes"
    assert core["shareapi_only_share_with_group_members"] == "yes"
    # Antivirus on uploads: files_antivirus enabled, daemon mode on the node's clamd.
    assert "files_antivirus" in state["apps"]
    av = state["config"]["files_antivirus"]
    assert (av["av_mode"], av["av_host"], av["av_port"]) == ("daemon", "127.0.0.1", "3310")
    # Office: richdocuments through the load balancers' TLS name, WOPI from the office node.
    assert "richdocuments" in state["apps"]
    office_config = state["config"]["richdocuments"]
    assert office_config["wopi_url"] == "https://office.example.org"
    assert office_config["wopi_allowlist"] == "192.0.2.30"

    # Quota change converges to exactly that change.
    pk = Mailbox.objects.get(email="alice@files.example").pk
    response = client.patch(
        reverse("mail-mailbox-detail", args=[pk]), {"quotaMb": 4096}, format="json"
    )
    assert response.status_code == 200, response.content
    assert cloud_node.nextcloud.state()["users"]["alice@files.example"]["quota"] == "4096 MB"

    # The customer's share policy: no external links, then a tree-wide cloud quota.
    response = client.patch(
        reverse("files-policy-detail", args=[cid]),
        {"externalLinks": False, "quotaMb": 1000},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["effective"]["externalLinks"]["value"] is False
    state = cloud_node.nextcloud.state()
    core = state["config"]["core"]
    assert core["shareapi_allow_links"] == "no"
    assert json.loads(core["shareapi_allow_links_exclude_groups"]) == [f"ums-c{cid}"]
    assert state["users"]["alice@files.example"]["quota"] == "1000 MB"
    token = app_password(cloud_node.nextcloud, "alice@files.example")
    refused = create_share(cloud_node.nextcloud, "alice@files.example", token, 3)
    assert refused.status_code == 403, refused.text

    # Turning the flag off disables the account; deleting the mailbox deletes it.
    response = client.patch(
        reverse("mail-mailbox-detail", args=[pk]),
        {"protocolAccess": {"files": "deny"}},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert cloud_node.nextcloud.state()["users"]["alice@files.example"]["enabled"] is False
    response = client.delete(reverse("mail-mailbox-detail", args=[pk]))
    assert response.status_code == 204, response.content
    assert "alice@files.example" not in cloud_node.nextcloud.state()["users"]
    assert_jobs_succeeded()


def test_revoking_a_customers_external_links_deletes_exactly_those(
    cast: Cast, cloud_node: CloudNode
) -> None:
    client = client_for(cast)
    first = customer(client, cast, "First")
    second = customer(client, cast, "Second")
    mailbox(client, domain(client, first, "first.example"), "ann", files=True)
    mailbox(client, domain(client, second, "second.example"), "sam", files=True)
    assert_jobs_succeeded()
    nextcloud = cloud_node.nextcloud
    shares: dict[str, list[str]] = {}
    for uid in ("ann@first.example", "sam@second.example"):
        token = app_password(nextcloud, uid)
        for share_type, extra in ((3, {}), (4, {"shareWith": "x@outside.test"}), (0, {})):
            if share_type == 0:
                extra = {"shareWith": uid}
            response = create_share(nextcloud, uid, token, share_type, **extra)
            assert response.status_code == 200, response.text
            shares.setdefault(uid, []).append(response.json()["ocs"]["data"]["id"])

    tokens_before = nextcloud.state()["tokens"]
    response = client.post(
        reverse("files-revoke-links"), {"scope": "customer", "customer": first}, format="json"
    )
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["job"])
    assert job.status == Job.SUCCEEDED, (job.status, job.error, job.log)
    assert job.result["revoked"] == 2 and job.progress_done == job.progress_total == 1

    left = {(s["uid_owner"], s["id"]) for s in nextcloud.state()["shares"]}
    assert left == {
        ("ann@first.example", shares["ann@first.example"][2]),  # ann's internal share kept
        *{("sam@second.example", i) for i in shares["sam@second.example"]},  # all of sam's
    }
    revoked = AuditRecord.objects.get(action="files.links.revoked")
    assert revoked.changes["revoked"] == 2 and revoked.changes["scope"] == "customer"
    assert AuditRecord.objects.filter(action="files.links.revoke_requested").count() == 1
    # The app passwords the job created are gone again.
    assert nextcloud.state()["tokens"] == tokens_before

    # A customer outside the administrator's subtree is a 404, a bad scope a field error.
    response = client.post(
        reverse("files-revoke-links"), {"scope": "customer", "customer": cast.isp.pk}, format="json"
    )
    assert response.status_code == 404, response.content
    response = client.post(reverse("files-revoke-links"), {"scope": "nobody"}, format="json")
    assert response.status_code == 400, response.content
    assert "scope" in response.json()["errors"], response.content
