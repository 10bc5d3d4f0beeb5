"""Team chat provisioning against a Zulip **stand-in** (tests/standins/zulip).

The Zulip server cannot be installed on these machines (it needs its own PostgreSQL,
RabbitMQ, memcached and a dedicated host), so these tests run the product's real client
(``chat/zulip.py``, unchanged) against an HTTP stand-in whose every request and response
is validated against the operations transcribed from Zulip's published OpenAPI document;
each test ends by asserting the stand-in saw no violation.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.urls import reverse

from audit.models import AuditRecord
from chat import actions as chat_actions
from chat.models import ChatAccount, ChatRealm
from mail.models import Mailbox
from tenants import limit_actions
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain
from tests.standins.zulip.server import ZulipStandIn
from ums import reconcile
from ums.models import Job

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "Granite-Meadow-Falcon-19"


@pytest.fixture
def zulip() -> Iterator[ZulipStandIn]:
    with ZulipStandIn() as server:
        yield server
    assert server.violations == [], server.violations


def mailbox(client, domain_id: int, local: str, **extra) -> dict:
    response = client.post(
        reverse("mail-mailbox-list"),
        {"domain": domain_id, "localPart": local, "password": PASSWORD, **extra},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def realm_body(cast: Cast, zulip: ZulipStandIn, **extra) -> dict:
    return {
        "customer": cast.ministry.pk,
        "name": "Ministry chat",
        "url": zulip.url,
        "botEmail": zulip.bot_email,
        "botApiKey": zulip.api_key,
        "defaultStreams": ["general", "announcements"],
        "retentionDays": 30,
        **extra,
    }


def last_sync() -> Job:
    job = Job.objects.filter(kind=chat_actions.SYNC_JOB).order_by("-pk").first()
    assert job is not None
    return job


def test_users_streams_and_retention_follow_the_tree(cast: Cast, zulip: ZulipStandIn) -> None:
    client = token_client(cast.sub_admin)
    domain = make_domain(cast.ministry, "ministry.example")
    alice = mailbox(client, domain.pk, "alice", displayName="Alice Archer")
    bob = mailbox(client, domain.pk, "bob")
    mailbox(client, domain.pk, "carol", protocolAccess={"chat": "deny"})
    # A department below with its own mailbox: part of the ministry's realm.
    dept = make_domain(cast.department, "dept.example")
    mailbox(client, dept.pk, "dave")

    response = client.post(reverse("chatrealm-list"), realm_body(cast, zulip), format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert "botApiKey" not in body and body["hasApiKey"] is True
    job = last_sync()
    assert job.status == Job.SUCCEEDED, job.error
    wanted = {"alice@ministry.example", "bob@ministry.example", "dave@dept.example"}
    assert zulip.active_emails() == wanted | {"owner@elsewhere.example"}
    assert "Alice Archer" in {u["full_name"] for u in zulip.users.values()}
    for name in ("general", "announcements"):
        stream = zulip.stream_named(name)
        assert stream is not None and stream["stream_id"] in zulip.defaults
        assert stream["message_retention_days"] == 30
        assert zulip.subscriber_emails(name) == wanted
    assert set(ChatAccount.objects.values_list("email", flat=True)) == wanted
    realm = ChatRealm.objects.get()
    assert realm.applied_generation == realm.desired_generation

    # Deactivation with the mailbox, reactivation when it comes back.
    response = client.patch(
        reverse("mail-mailbox-detail", args=[bob["id"]]), {"isEnabled": False}, format="json"
    )
    assert response.status_code == 200, response.content
    assert last_sync().status == Job.SUCCEEDED
    assert "bob@ministry.example" not in zulip.active_emails()
    client.patch(
        reverse("mail-mailbox-detail", args=[bob["id"]]), {"isEnabled": True}, format="json"
    )
    assert "bob@ministry.example" in zulip.active_emails()
    # The chat flag denied on the mailbox deactivates too; the realm's owner (not one of
    # its managed domains) is never touched.
    client.patch(
        reverse("mail-mailbox-detail", args=[alice["id"]]),
        {"protocolAccess": {"chat": "deny"}},
        format="json",
    )
    assert zulip.active_emails() == {
        "bob@ministry.example",
        "dave@dept.example",
        "owner@elsewhere.example",
    }

    # Retention changed in the portal/API: applied to the default streams.
    response = client.patch(
        reverse("chatrealm-detail", args=[realm.pk]), {"retentionDays": 90}, format="json"
    )
    assert response.status_code == 200, response.content
    assert zulip.stream_named("general")["message_retention_days"] == 90
    actions = list(AuditRecord.objects.filter(action__startswith="chat_realm.").values_list(
        "action", flat=True))  # fmt: skip
    assert "chat_realm.create" in actions and "chat_realm.update" in actions
    assert not any("k" * 32 in str(e.changes) for e in AuditRecord.objects.all())


def test_a_change_made_on_the_server_by_hand_is_undone_by_the_reconciler(
    cast: Cast, zulip: ZulipStandIn, settings
) -> None:
    client = token_client(cast.sub_admin)
    domain = make_domain(cast.ministry, "ministry.example")
    mailbox(client, domain.pk, "alice")
    client.post(reverse("chatrealm-list"), realm_body(cast, zulip), format="json")
    uid = next(u for u, v in zulip.users.items() if v["delivery_email"] == "alice@ministry.example")
    zulip.users[uid]["is_active"] = False  # someone deactivated her in Zulip's own UI
    zulip.defaults.clear()
    realm = ChatRealm.objects.get()
    ChatRealm.objects.filter(pk=realm.pk).update(last_sync_at="2000-01-01T00:00:00Z")
    reconcile.run_all()
    assert "alice@ministry.example" in zulip.active_emails()
    assert zulip.stream_named("general")["stream_id"] in zulip.defaults


def test_a_sync_that_dies_half_way_is_finished_by_the_next_one(
    cast: Cast, zulip: ZulipStandIn
) -> None:
    """The server goes away after the first user was created (the worker's sync fails
    half-way); the reconciler's next run creates the rest, with no duplicate."""
    client = token_client(cast.sub_admin)
    domain = make_domain(cast.ministry, "ministry.example")
    for local in ("a1", "a2", "a3"):
        mailbox(client, domain.pk, local)
    original = zulip._op
    created: list[str] = []

    def flaky(key, params, args, caller):
        if key == "POST /users" and created:
            raise ConnectionError("server went away")
        status, reply = original(key, params, args, caller)
        if key == "POST /users":
            created.append(params["email"])
        return status, reply

    zulip._op = flaky
    client.post(reverse("chatrealm-list"), realm_body(cast, zulip), format="json")
    job = last_sync()
    assert job.status in (Job.FAILED, Job.PENDING), job.status
    assert len(zulip.active_emails()) == 2  # the owner and one new user
    realm = ChatRealm.objects.get()
    assert realm.applied_generation < realm.desired_generation
    zulip._op = original
    Job.objects.filter(kind=chat_actions.SYNC_JOB).update(status=Job.FAILED)
    reconcile.run_all()
    realm.refresh_from_db()
    assert realm.applied_generation == realm.desired_generation
    emails = [u["delivery_email"] for u in zulip.users.values()]
    assert sorted(e for e in emails if e.endswith("ministry.example")) == [
        "a1@ministry.example", "a2@ministry.example", "a3@ministry.example"
    ]  # fmt: skip


def test_chat_users_count_in_subtree_limits(cast: Cast, zulip: ZulipStandIn) -> None:
    client = token_client(cast.sub_admin)
    domain = make_domain(cast.ministry, "ministry.example")
    for local in ("a1", "a2", "a3"):
        mailbox(client, domain.pk, local)
    limit_actions.set_limits(actor=None, customer=cast.government, max_chat_users=2)
    client.post(reverse("chatrealm-list"), realm_body(cast, zulip), format="json")
    job = last_sync()
    assert job.status == Job.SUCCEEDED
    assert job.result["over_limit"] == ["a3@ministry.example"]
    assert len(zulip.active_emails() - {"owner@elsewhere.example"}) == 2
    from tenants.limits import subtree_usage

    assert subtree_usage([cast.government.path])[cast.government.path]["chat_users"] == 2
    response = client.get(reverse("mail-limit-detail", args=[cast.government.pk]))
    assert response.status_code == 200, response.content
    assert response.json()["maxChatUsers"] == 2
    assert response.json()["usage"]["chatUsers"] == 2


def test_wrong_key_fails_the_job_with_zulips_reason_and_api_errors(
    cast: Cast, zulip: ZulipStandIn
) -> None:
    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("chatrealm-list"), realm_body(cast, zulip, botApiKey="wrong"), format="json"
    )
    assert response.status_code == 201
    job = last_sync()
    assert job.status in (Job.FAILED, Job.PENDING)
    assert "Invalid API key" in ChatRealm.objects.get().last_error
    zulip.violations.clear()
    # Every field error at once; no 500 for client input.
    response = client.post(
        reverse("chatrealm-list"),
        {"customer": cast.isp.pk, "name": "", "url": "ftp://x", "botEmail": "nope",
         "defaultStreams": ["ok", ""], "retentionDays": 0},
        format="json",
    )  # fmt: skip
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert {"customer", "name", "url", "botEmail", "defaultStreams", "retentionDays"} <= set(
        errors
    ), errors
    # Out of scope: 404.
    realm = ChatRealm.objects.get()
    other = token_client(cast.sibling_admin)
    assert other.get(reverse("chatrealm-detail", args=[realm.pk])).status_code == 404
    assert other.post(reverse("chatrealm-sync", args=[realm.pk])).status_code == 404


def test_a_nested_realm_takes_its_subtree(cast: Cast, zulip: ZulipStandIn) -> None:
    client = token_client(cast.sub_admin)
    mailbox(client, make_domain(cast.ministry, "ministry.example").pk, "alice")
    mailbox(client, make_domain(cast.department, "dept.example").pk, "dave")
    with ZulipStandIn(bot_email="bot@dept.example") as dept_server:
        client.post(
            reverse("chatrealm-list"),
            realm_body(cast, dept_server, customer=cast.department.pk, name="Dept chat",
                       botEmail=dept_server.bot_email, botApiKey=dept_server.api_key),
            format="json",
        )  # fmt: skip
        client.post(reverse("chatrealm-list"), realm_body(cast, zulip), format="json")
        assert dept_server.active_emails() == {"dave@dept.example", "owner@elsewhere.example"}
        assert dept_server.violations == []
    assert zulip.active_emails() == {"alice@ministry.example", "owner@elsewhere.example"}
    assert Mailbox.objects.count() == 2
