"""Team chat portal pages against the Zulip **stand-in** (tests/standins/zulip; the Zulip
server cannot be installed here): an organisation created, edited (key never rendered),
synced with "Sync now" and deleted through the forms, every error at once, 404 outside
scope, and the enable-for-a-mailbox flag in the mailbox form."""

from __future__ import annotations

import pytest
from django.test import Client

from chat.models import ChatRealm
from tests.fixtures import PASSWORD, Cast
from tests.mail.helpers import make_domain, make_mailbox
from tests.standins.zulip.server import ZulipStandIn
from ums.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def portal(admin) -> Client:
    client = Client()
    assert client.login(username=admin.username, password=PASSWORD)
    return client


def test_realm_pages_create_edit_sync_delete(cast: Cast) -> None:
    make_mailbox(make_domain(cast.ministry, "ministry.example"), "alice")
    client = portal(cast.sub_admin)
    assert client.get("/chat/").status_code == 200
    assert client.get("/chat/new/").status_code == 200
    response = client.post(
        "/chat/new/",
        {"customer": cast.ministry.pk, "name": "", "url": "ftp://x", "bot_email": "nope",
         "retention_days": "0"},
    )  # fmt: skip
    assert response.status_code == 200
    body = response.content.decode()
    for text in ("This field is required.", "Enter a valid email address.", "greater than"):
        assert text in body, text
    with ZulipStandIn() as zulip:
        response = client.post(
            "/chat/new/",
            {"customer": cast.ministry.pk, "name": "Ministry chat", "url": zulip.url,
             "bot_email": zulip.bot_email, "bot_api_key": zulip.api_key,
             "default_streams": "general\nnews\n", "retention_days": "60", "is_enabled": "on"},
        )  # fmt: skip
        assert response.status_code == 302, response.content.decode()[:3000]
        realm = ChatRealm.objects.get()
        assert realm.default_streams == ["general", "news"]
        assert "alice@ministry.example" in zulip.active_emails()
        page = client.get(f"/chat/{realm.pk}/edit/").content.decode()
        assert zulip.api_key not in page and "general\nnews" in page
        response = client.post(
            f"/chat/{realm.pk}/edit/",
            {"name": "Ministry chat", "url": zulip.url, "bot_email": zulip.bot_email,
             "bot_api_key": "", "default_streams": "general", "retention_days": "",
             "is_enabled": "on"},
        )  # fmt: skip
        assert response.status_code == 302
        realm.refresh_from_db()
        assert realm.bot_api_key == zulip.api_key and realm.retention_days is None
        response = client.post(f"/chat/{realm.pk}/sync/")
        job = Job.objects.filter(kind="chat.sync_realm").order_by("-pk").first()
        assert response["Location"].endswith(f"/{job.pk}/")
        assert job.status == Job.SUCCEEDED, job.error
        users = client.get(f"/chat/{realm.pk}/users/").content.decode()
        assert "alice@ministry.example" in users
        assert zulip.violations == []
    outsider = portal(cast.sibling_admin)
    for url in (f"/chat/{realm.pk}/edit/", f"/chat/{realm.pk}/users/", f"/chat/{realm.pk}/delete/"):
        assert outsider.get(url).status_code == 404
    assert outsider.post(f"/chat/{realm.pk}/sync/").status_code == 404
    assert client.post(f"/chat/{realm.pk}/delete/").status_code == 302
    assert not ChatRealm.objects.exists()


def form_data(client: Client, url: str) -> dict:
    """What the browser would post back unchanged: the form's current values."""
    from django import forms

    form = client.get(url).context["form"]
    data = {}
    for name, field in form.fields.items():
        value = form[name].value()
        if isinstance(field, forms.BooleanField):
            if value:
                data[name] = "on"
        elif isinstance(value, list | tuple):
            data[name] = "\n".join(str(v) for v in value)
        elif value is not None:
            data[name] = value
    return data


def test_chat_flag_set_in_the_mailbox_form_deactivates_the_user(cast: Cast) -> None:
    """The tenant administrator's path: the mailbox page's "Team chat" access flag."""
    from chat import actions

    alice = make_mailbox(make_domain(cast.ministry, "ministry.example"), "alice")
    client = portal(cast.sub_admin)
    with ZulipStandIn() as zulip:
        actions.create_realm(
            actor=None, customer=cast.ministry, name="Chat", url=zulip.url,
            bot_email=zulip.bot_email, bot_api_key=zulip.api_key,
        )  # fmt: skip
        assert "alice@ministry.example" in zulip.active_emails()
        url = f"/mail/mailboxes/{alice.pk}/"
        data = form_data(client, url)
        assert data["access_chat"] == "inherit" and data["access_dav"] == "inherit"
        data["access_chat"] = "deny"
        response = client.post(url, data)
        assert response.status_code == 302, response.content.decode()[:2000]
        assert "alice@ministry.example" not in zulip.active_emails()
        data["access_chat"] = "allow"
        assert client.post(url, data).status_code == 302
        assert "alice@ministry.example" in zulip.active_emails()
        assert zulip.violations == []
