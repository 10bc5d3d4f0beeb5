"""The spam-hold API per message and its actions: the scoping contract, content
permission, the 409 for the second administrator, bulk requests and idempotency.

Messages here are rows made directly (``tests/spamhold/held.py``) whose node is absent:
the HTTP contract (status codes, bodies, idempotency, scoping) is what is tested. A
release that really delivers mail from a node is tested with the real nodes in the
action tests of the spam-hold backend.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.db import models
from django.urls import reverse

from audit.models import AuditRecord
from spamhold.models import HeldMessage, IdempotencyKey, OutcomeIntent, Status
from tenants import permissions as perms
from tests.api.contracts import ScopedEndpointContract
from tests.fixtures import Cast, make_admin, token_client
from tests.spamhold.held import make_held

pytestmark = pytest.mark.django_db

HANDLED_AT = datetime.datetime(2024, 5, 1, 12, 0, 3, tzinfo=datetime.UTC)


class TestSpamHoldMessageEndpoint(ScopedEndpointContract):
    basename = "spamhold-message"
    model = HeldMessage
    can_delete = False

    def make_in_scope(self, cast: Cast) -> models.Model:
        return make_held(cast.ministry)

    def make_outside(self, cast: Cast) -> models.Model:
        return make_held(cast.shop)


def released_by_someone(cast: Cast, **fields: Any) -> HeldMessage:
    return make_held(
        cast.ministry,
        status=Status.RELEASED,
        outcome="release",
        handled_at=HANDLED_AT,
        handled_by=cast.root_admin,
        handled_by_name="Root Admin",
        **fields,
    )


# ------------------------------------------------------------------------ scoping


def test_outsider_gets_404_on_every_message_route(cast: Cast) -> None:
    held = make_held(cast.ministry)
    outsider = token_client(cast.sibling_admin)
    for suffix in ("", "content/", "log/"):
        assert outsider.get(f"/api/v1/spamhold/messages/{held.pk}/{suffix}").status_code == 404
    for suffix in ("release/", "delete/"):
        url = f"/api/v1/spamhold/messages/{held.pk}/{suffix}"
        assert outsider.post(url, {}, format="json").status_code == 404
    # Bulk by id: the outside id is simply not found, and nothing changes.
    response = outsider.post("/api/v1/spamhold/release/", {"ids": [held.pk]}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["notFound"] == [held.pk]
    held.refresh_from_db()
    assert held.status == Status.ONHOLD and held.handled_by_name == ""


def test_huge_ids_are_404_or_field_errors(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    assert client.get("/api/v1/spamhold/messages/99999999999999999999/").status_code == 404
    response = client.post("/api/v1/spamhold/release/", {"ids": [2**70]}, format="json")
    assert response.status_code == 400 and "ids" in response.json()["errors"]


# ------------------------------------------------------------------------ detail, content


def test_detail_says_metadata_only_without_the_content_permission(cast: Cast) -> None:
    held = make_held(cast.department, attachment_name="invoice.exe", reason="attachment")
    viewer = token_client(cast.ministry_viewer)
    body = viewer.get(f"/api/v1/spamhold/messages/{held.pk}/").json()
    assert body["metadataOnly"] is True
    assert body["attachmentName"] == "invoice.exe"
    assert body["timestamp"] == 1665516666.609 and body["expiry"] == 1665519800
    response = viewer.get(f"/api/v1/spamhold/messages/{held.pk}/content/")
    assert response.status_code == 403
    assert response.json()["metadataOnly"] is True
    assert "Metadata only" in response.json()["message"]
    assert (
        token_client(cast.sub_admin)
        .get(f"/api/v1/spamhold/messages/{held.pk}/")
        .json()["metadataOnly"]
        is False
    )


def test_content_with_the_permission(cast: Cast, monkeypatch: pytest.MonkeyPatch) -> None:
    from spamhold import content

    held = make_held(cast.ministry)
    seen: list[Any] = []

    def fake_read(*, actor: Any, message: HeldMessage) -> content.MessageContent:
        seen.append((actor, message))
        return content.MessageContent(
            headers=[("Subject", "<b>hi</b>")],
            text="hello",
            attachments=[content.Attachment("a<script>.pdf", "application/pdf", 12)],
        )

    monkeypatch.setattr(content, "read", fake_read)
    response = token_client(cast.sub_admin).get(f"/api/v1/spamhold/messages/{held.pk}/content/")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "id": held.pk,
        "headers": [{"name": "Subject", "value": "<b>hi</b>"}],
        "text": "hello",
        "attachments": [{"name": "a<script>.pdf", "contentType": "application/pdf", "size": 12}],
        "truncated": False,
    }
    assert seen[0][0] == cast.sub_admin and seen[0][1].pk == held.pk


def test_content_and_log_of_a_message_without_node_are_502_with_a_message(cast: Cast) -> None:
    held = make_held(cast.ministry)
    client = token_client(cast.sub_admin)
    response = client.get(f"/api/v1/spamhold/messages/{held.pk}/content/")
    assert response.status_code == 502
    assert "no longer exists" in response.json()["message"]
    response = client.get(f"/api/v1/spamhold/messages/{held.pk}/log/")
    assert response.status_code == 200 and response.json() == {"id": held.pk, "lines": []}


# ------------------------------------------------------------------------ actions


def test_second_administrator_gets_409_saying_who_released_it(cast: Cast) -> None:
    held = released_by_someone(cast)
    response = token_client(cast.sub_admin).post(
        f"/api/v1/spamhold/messages/{held.pk}/release/", {}, format="json"
    )
    assert response.status_code == 409, response.content
    body = response.json()
    assert body["message"] == "Already released by Root Admin at 2024-05-01 12:00:03 UTC."
    assert body["handledBy"] == "Root Admin" and body["status"] == "RELEASED"
    assert body["handledAt"] == HANDLED_AT.timestamp()
    deleted = make_held(
        cast.ministry, status=Status.DELETED, handled_at=HANDLED_AT, handled_by_name="Eve"
    )
    response = token_client(cast.sub_admin).post(
        f"/api/v1/spamhold/messages/{deleted.pk}/release/", {}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["message"].startswith("Already deleted by Eve at ")


def test_a_node_failure_is_502_and_the_message_stays_on_hold(cast: Cast) -> None:
    held = make_held(cast.ministry)  # its node is gone
    response = token_client(cast.sub_admin).post(
        f"/api/v1/spamhold/messages/{held.pk}/delete/", {}, format="json"
    )
    assert response.status_code == 502, response.content
    assert "no longer exists" in response.json()["message"]
    held.refresh_from_db()
    assert held.status == Status.ONHOLD


def test_permissions_per_action(cast: Cast) -> None:
    held = make_held(cast.department)
    viewer = token_client(cast.ministry_viewer)
    for url in (
        f"/api/v1/spamhold/messages/{held.pk}/release/",
        f"/api/v1/spamhold/messages/{held.pk}/delete/",
        "/api/v1/spamhold/release/",
        "/api/v1/spamhold/delete/",
    ):
        assert viewer.post(url, {"ids": [held.pk]}, format="json").status_code == 403, url
    releaser = make_admin(cast.ministry, "releaser", [perms.SPAMHOLD_VIEW, perms.SPAMHOLD_RELEASE])
    client = token_client(releaser)
    # Allow-listing the sender is a mail policy change: mail.manage is needed too.
    response = client.post(
        f"/api/v1/spamhold/messages/{held.pk}/release/", {"allowSender": True}, format="json"
    )
    assert response.status_code == 403
    assert (
        client.post(f"/api/v1/spamhold/messages/{held.pk}/delete/", {}, format="json").status_code
        == 403
    )
    read_only = token_client(cast.sub_admin, read_only=True)
    assert (
        read_only.post(
            f"/api/v1/spamhold/messages/{held.pk}/release/", {}, format="json"
        ).status_code
        == 403
    )
    held.refresh_from_db()
    assert held.status == Status.ONHOLD


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        ("/api/v1/spamhold/release/", {}, "nonFieldErrors"),
        ("/api/v1/spamhold/release/", {"ids": []}, "ids"),
        ("/api/v1/spamhold/release/", {"ids": ["x"]}, "ids"),
        (
            "/api/v1/spamhold/release/",
            {"ids": [1], "filters": {"status": "ONHOLD"}},
            "nonFieldErrors",
        ),
        ("/api/v1/spamhold/release/", {"filters": {}}, "filters"),
        ("/api/v1/spamhold/release/", {"filters": {"status": 5}}, "filters"),
        ("/api/v1/spamhold/release/", {"ids": [1], "blockSender": True}, "blockSender"),
        ("/api/v1/spamhold/release/", {"ids": [1], "allowSender": "maybe"}, "allowSender"),
        ("/api/v1/spamhold/delete/", {"ids": [1], "allowSender": True}, "allowSender"),
        ("/api/v1/spamhold/delete/", {"ids": list(range(1, 1002))}, "ids"),
        ("/api/v1/spamhold/refresh/", {"nodes": "all"}, "nodes"),
    ],
)
def test_bad_action_bodies_are_400_and_change_nothing(
    cast: Cast, url: str, body: dict, field: str
) -> None:
    held = make_held(cast.ministry)
    client = token_client(cast.sub_admin)
    client.get("/api/v1/spamhold/messages/")  # the token's first use is audited once
    before = AuditRecord.objects.count()
    response = client.post(url, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"], response.json()
    held.refresh_from_db()
    assert held.status == Status.ONHOLD
    assert AuditRecord.objects.count() == before


def test_bulk_by_ids_reports_each_outcome(cast: Cast) -> None:
    released = released_by_someone(cast)
    nodeless = make_held(cast.ministry)
    outside = make_held(cast.shop)
    response = token_client(cast.sub_admin).post(
        "/api/v1/spamhold/release/",
        {"ids": [released.pk, nodeless.pk, outside.pk, 10**12]},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["done"] == []
    assert [a["id"] for a in body["already"]] == [released.pk]
    assert body["already"][0]["message"].startswith("Already released by Root Admin")
    assert [f["id"] for f in body["failed"]] == [nodeless.pk]
    assert sorted(body["notFound"]) == sorted([outside.pk, 10**12])


def test_bulk_by_filters_starts_a_job(cast: Cast, monkeypatch: pytest.MonkeyPatch) -> None:
    from ums import jobs

    monkeypatch.setattr(jobs, "_dispatch", lambda job_id: None)  # the job's run is not tested here
    make_held(cast.ministry)
    response = token_client(cast.sub_admin).post(
        "/api/v1/spamhold/delete/",
        {"filters": {"fromDomain": "gmail.com", "status": "ONHOLD", "customer": cast.ministry.pk}},
        format="json",
    )
    assert response.status_code == 202, response.content
    body = response.json()
    from ums.models import Job

    job = Job.objects.get(pk=body["job"])
    assert job.kind == "spamhold.apply" and job.requested_by_id == cast.sub_admin.pk
    request = OutcomeIntent.objects.get(pk=body["request"])
    assert job.params == {"intent": request.pk}
    assert request.outcome == "delete" and request.requested_by == cast.sub_admin
    assert request.filters == {
        "from_domain": "gmail.com",
        "status": "ONHOLD",
        "customer": cast.ministry.pk,
    }
    assert body["jobUrl"].endswith(reverse("job-detail", args=[job.pk]))


def test_apply_filters_reads_what_the_api_stored(cast: Cast) -> None:
    from spamhold import query

    inside = make_held(cast.department)
    make_held(cast.ministry, sender="other@else.example")
    filters = {"from_domain": "gmail.com", "status": "ONHOLD", "customer": cast.department.pk}
    found = query.apply_filters(HeldMessage.objects.all(), filters)
    assert list(found.values_list("pk", flat=True)) == [inside.pk]
    with pytest.raises(query.FilterError):
        query.apply_filters(HeldMessage.objects.all(), {"status": "NOPE"})
    with pytest.raises(query.FilterError):
        query.apply_filters(HeldMessage.objects.all(), {"colour": "red"})


# ------------------------------------------------------------------------ idempotency


def test_same_idempotency_key_replays_the_first_answer(cast: Cast) -> None:
    held = released_by_someone(cast)
    client = token_client(cast.sub_admin)
    url = f"/api/v1/spamhold/messages/{held.pk}/release/"
    first = client.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 409
    audit_before = AuditRecord.objects.count()
    # Even if the world changed since, the same request gets the same (stored) answer.
    HeldMessage.objects.filter(pk=held.pk).update(handled_by_name="Somebody Else")
    again = client.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert again.status_code == 409
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert AuditRecord.objects.count() == audit_before
    # Another body under the same key is refused.
    other = client.post(url, {"allowSender": True}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert other.status_code == 422
    assert "different request" in other.json()["message"]
    # Another endpoint under the same key too.
    other = client.post(
        "/api/v1/spamhold/release/", {"ids": [held.pk]}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )
    assert other.status_code == 422
    # Keys belong to one administrator: another may use the same key for their own request.
    assert (
        token_client(cast.root_admin)
        .post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
        .json()["message"]
        .startswith("Already released by Somebody Else")
    )


def test_bulk_idempotency_does_not_act_twice(cast: Cast) -> None:
    released = released_by_someone(cast)
    nodeless = make_held(cast.ministry)
    client = token_client(cast.sub_admin)
    body = {"ids": [released.pk]}
    first = client.post("/api/v1/spamhold/delete/", body, format="json", HTTP_IDEMPOTENCY_KEY="abc")
    assert first.status_code == 200
    assert IdempotencyKey.objects.filter(administrator=cast.sub_admin, key="abc").count() == 1
    before = AuditRecord.objects.count()
    again = client.post("/api/v1/spamhold/delete/", body, format="json", HTTP_IDEMPOTENCY_KEY="abc")
    assert again.json() == first.json() and AuditRecord.objects.count() == before
    # A failed node attempt (5xx) is not stored: the same key may try again.
    url = f"/api/v1/spamhold/messages/{nodeless.pk}/release/"
    assert client.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="n-1").status_code == 502
    assert not IdempotencyKey.objects.filter(key="n-1").exists()
    # So is a refused body (nothing happened).
    bad = client.post("/api/v1/spamhold/delete/", {}, format="json", HTTP_IDEMPOTENCY_KEY="b-1")
    assert bad.status_code == 400
    assert not IdempotencyKey.objects.filter(key="b-1").exists()


def test_invalid_idempotency_key_is_400(cast: Cast) -> None:
    held = make_held(cast.ministry)
    response = token_client(cast.sub_admin).post(
        f"/api/v1/spamhold/messages/{held.pk}/release/",
        {},
        format="json",
        HTTP_IDEMPOTENCY_KEY="has space",
    )
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["errors"]
