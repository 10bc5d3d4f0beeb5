"""Portal pages of the spam hold: login and scope, escaping of message fields, the queue's
filters, counts and paging, the confirm-then-act flow and constant queries on the list."""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest
from django.urls import reverse

from spamhold.models import HeldMessage, OutcomeIntent, Reason, Status
from tenants import permissions as perms
from tests.fixtures import Cast, make_admin
from tests.spamhold.held import T0, make_held
from ums import context

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_action_context() -> Any:
    """No acting administrator left over from another test (see tests/portal/conftest.py)."""
    with context.acting(channel=context.CHANNEL_SYSTEM):
        yield


@pytest.fixture
def login(client: Any) -> Any:
    """``login(admin)``: the test client with a session of ``admin`` (English UI)."""

    def _login(admin: Any) -> Any:
        client.force_login(admin)
        client.cookies["django_language"] = "en"
        return client

    return _login


XSS = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def _no_live_script(html: str) -> None:
    # The page's own scripts are external files; no inline script element may appear.
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag, tag
    assert XSS not in html


def test_pages_need_login_and_scope(cast: Cast, login: Any, client: Any) -> None:
    held = make_held(cast.ministry)
    for url in (reverse("spamhold:home"), reverse("spamhold:message", args=[held.pk])):
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response["Location"]
    outsider = login(cast.sibling_admin)
    assert outsider.get(reverse("spamhold:message", args=[held.pk])).status_code == 404
    assert held.subject not in outsider.get(reverse("spamhold:home")).content.decode()
    assert outsider.get(reverse("spamhold:message", args=["9" * 25])).status_code == 404


def test_page_needs_the_view_permission(cast: Cast, login: Any) -> None:
    nobody = make_admin(cast.ministry, "no.spam", [perms.MAIL_VIEW])
    assert login(nobody).get(reverse("spamhold:home")).status_code == 403


def test_navigation_links_the_queue(cast: Cast, login: Any) -> None:
    html = login(cast.sub_admin).get(reverse("spamhold:home")).content.decode()
    assert f'href="{reverse("spamhold:home")}" class="nav-item active"' in html


def test_queue_and_message_escape_every_message_field(
    cast: Cast, login: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spamhold import content

    held = make_held(
        cast.ministry,
        subject=f"Win {XSS}",
        sender=f"x{XSS}@evil.example",
        recipient=f"{XSS}@ministry.example",
        recipients=[f"{XSS}@ministry.example"],
        attachment_name=f"{XSS}.exe",
        reason=Reason.ATTACHMENT,
        reason_detail=XSS,
        spam_rules=[XSS],
        virus_name=XSS,
    )
    monkeypatch.setattr(
        content,
        "read",
        lambda *, actor, message: content.MessageContent(
            headers=[(XSS, XSS)],
            text=XSS,
            attachments=[content.Attachment(f"{XSS}.pdf", XSS, 10)],
        ),
    )
    client = login(cast.sub_admin)
    html = client.get(reverse("spamhold:home")).content.decode()
    assert f"Win {ESCAPED}" in html
    _no_live_script(html)
    html = client.get(reverse("spamhold:message", args=[held.pk])).content.decode()
    assert f"{ESCAPED}.exe" in html
    assert html.count(ESCAPED) >= 5
    _no_live_script(html)
    # The content arrives separately (a fragment, or a page of its own without JavaScript).
    url = reverse("spamhold:content", args=[held.pk])
    for response in (client.get(url, headers={"X-Requested-With": "fetch"}), client.get(url)):
        html = response.content.decode()
        assert f"{ESCAPED}.pdf" in html and html.count(ESCAPED) >= 4
        _no_live_script(html)


def test_message_page_without_content_permission_says_metadata_only(
    cast: Cast, login: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spamhold import content

    def refuse(**kwargs: Any) -> None:
        raise AssertionError("content must not be fetched")

    monkeypatch.setattr(content, "read", refuse)
    held = make_held(cast.department)
    html = login(cast.ministry_viewer).get(reverse("spamhold:message", args=[held.pk]))
    assert html.status_code == 200
    text = html.content.decode()
    assert "Metadata only" in text and reverse("spamhold:content", args=[held.pk]) not in text
    assert (
        login(cast.ministry_viewer).get(reverse("spamhold:content", args=[held.pk])).status_code
        == 403
    )
    # View-only: no action buttons.
    assert 'value="release"' not in text and 'value="delete"' not in text


def test_message_page_shows_a_node_problem_instead_of_failing(cast: Cast, login: Any) -> None:
    held = make_held(cast.ministry)  # no node
    client = login(cast.sub_admin)
    response = client.get(reverse("spamhold:log", args=[held.pk]))
    assert response.status_code == 200
    assert "no lines for this message" in response.content.decode()
    response = client.get(reverse("spamhold:content", args=[held.pk]))
    assert response.status_code == 200
    assert "no longer exists" in response.content.decode()


def test_queue_filters_counts_and_paging(cast: Cast, login: Any) -> None:
    for i in range(55):
        make_held(cast.ministry, received_at=T0 + datetime.timedelta(seconds=i), subject=f"m{i}")
    make_held(cast.ministry, reason=Reason.VIRUS, subject="virus one")
    make_held(cast.ministry, status=Status.RELEASED, subject="released one")
    client = login(cast.sub_admin)
    response = client.get(reverse("spamhold:home"))
    assert response.status_code == 200
    assert len(response.context["rows"]) == 50
    counts = {c.reason: c.count for c in response.context["counts"]}
    assert counts["spam"] == 55 and counts["virus"] == 1
    assert "released one" not in response.content.decode()  # on hold by default
    cursor = response.context["page"].next_cursor
    assert cursor
    second = client.get(reverse("spamhold:home"), {"cursor": cursor})
    assert len(second.context["rows"]) == 6
    virus = client.get(reverse("spamhold:home"), {"reason": "virus"})
    assert [r["subject"] for r in virus.context["rows"]] == ["virus one"]
    anything = client.get(reverse("spamhold:home"), {"status": "any", "subject": "released"})
    assert [r["subject"] for r in anything.context["rows"]] == ["released one"]
    bad = client.get(reverse("spamhold:home"), {"customer": "999999", "cursor": "junk"})
    assert bad.status_code == 200 and bad.context["form"].errors
    junk_cursor = client.get(reverse("spamhold:home"), {"cursor": "junk"})
    assert junk_cursor.status_code == 200 and len(junk_cursor.context["rows"]) == 50


def test_queue_runs_a_constant_number_of_queries(
    cast: Cast, login: Any, django_assert_max_num_queries: Any
) -> None:
    for i in range(60):
        make_held(cast.ministry, received_at=T0 + datetime.timedelta(seconds=i))
    client = login(cast.sub_admin)
    client.get(reverse("spamhold:home"))
    with django_assert_max_num_queries(16):
        response = client.get(reverse("spamhold:home"))
    assert len(response.context["rows"]) == 50
    with django_assert_max_num_queries(16):
        client.get(reverse("spamhold:home"), {"customer": cast.ministry.pk, "subject": "x"})


def test_action_asks_to_confirm_then_acts(cast: Cast, login: Any) -> None:
    released = make_held(
        cast.ministry, status=Status.RELEASED, handled_by_name="Root Admin",
        handled_at=T0, outcome="release",
    )  # fmt: skip
    nodeless = make_held(cast.ministry)
    outside = make_held(cast.shop)
    client = login(cast.sub_admin)
    url = reverse("spamhold:act")
    ids = [released.pk, nodeless.pk, outside.pk]
    response = client.post(url, {"outcome": "release", "ids": ids})
    assert response.status_code == 200
    assert response.context["count"] == 2  # the outsider's message is not counted
    assert 'name="confirmed"' in response.content.decode()
    nodeless.refresh_from_db()
    assert nodeless.status == Status.ONHOLD
    response = client.post(url, {"outcome": "release", "ids": ids, "confirmed": "on"}, follow=True)
    text = response.content.decode()
    assert "Already released by Root Admin" in text
    assert "no longer exists" in text
    outside.refresh_from_db()
    assert outside.status == Status.ONHOLD


def test_action_needs_its_permission_and_a_selection(cast: Cast, login: Any) -> None:
    held = make_held(cast.department)
    viewer = login(cast.ministry_viewer)
    response = viewer.post(reverse("spamhold:act"), {"outcome": "delete", "ids": [held.pk]})
    assert response.status_code == 403
    client = login(cast.sub_admin)
    response = client.post(reverse("spamhold:act"), {"outcome": "delete"}, follow=True)
    assert "Select at least one message." in response.content.decode()
    response = client.post(reverse("spamhold:act"), {"outcome": "explode", "ids": [held.pk]})
    assert response.status_code == 302
    held.refresh_from_db()
    assert held.status == Status.ONHOLD


def test_everything_matching_starts_a_job(
    cast: Cast, login: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ums import jobs
    from ums.models import Job

    monkeypatch.setattr(jobs, "_dispatch", lambda job_id: None)
    make_held(cast.ministry)
    make_held(cast.ministry, sender="a@other.example")
    client = login(cast.sub_admin)
    form = {"outcome": "delete", "all_matching": "on", "from_domain": "gmail.com"}
    response = client.post(reverse("spamhold:act"), form)
    assert response.status_code == 200 and response.context["count"] == 1
    response = client.post(reverse("spamhold:act"), {**form, "confirmed": "on"})
    job = Job.objects.get(kind="spamhold.apply")
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:job-detail", args=[job.pk])
    request = OutcomeIntent.objects.get(pk=job.params["intent"])
    assert request.filters == {"status": "ONHOLD", "from_domain": "gmail.com"}
    assert request.state == "requested" and not request.claimed_all
    assert HeldMessage.objects.filter(status=Status.ONHOLD).count() == 2  # the job acts later


def test_next_must_stay_on_the_queue(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    response = client.post(
        reverse("spamhold:act"), {"outcome": "delete", "next": "https://evil.example/"}
    )
    assert response["Location"] == reverse("spamhold:home")


def test_refresh_starts_a_job(cast: Cast, login: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from ums import jobs

    monkeypatch.setattr(jobs, "_dispatch", lambda job_id: None)
    response = login(cast.root_admin).post(reverse("spamhold:refresh"))
    assert response.status_code == 302
    assert "/jobs/" in response["Location"]
    assert login(cast.root_admin).get(reverse("spamhold:refresh")).status_code == 405


def test_a_requested_message_shows_pending_not_done(cast: Cast, login: Any) -> None:
    asked = make_held(
        cast.ministry,
        subject="asked for",
        outcome="release",
        handled_at=T0,
        handled_by_name="Root Admin",
        node_error="Node smtp1: connection refused",
    )
    client = login(cast.sub_admin)
    html = client.get(reverse("spamhold:home")).content.decode()
    row = html[html.index(f'id="held-{asked.pk}"') - 300 : html.index("asked for") + 2000]
    assert "Releasing…" in row and "Released<" not in row
    assert re.search(rf'id="held-{asked.pk}"[^>]* disabled', html)
    assert "connection refused" in row
    page = client.get(reverse("spamhold:message", args=[asked.pk])).content.decode()
    assert "Releasing…" in page and "waiting for the node to confirm" in page
    assert 'value="release"' not in page and 'value="delete"' not in page
