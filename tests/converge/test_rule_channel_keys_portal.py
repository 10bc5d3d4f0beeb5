"""The portal page of the channel signing keys (Servers, next to the certificates):
operators list, set (GnuPG's verdicts as form errors, as the API's field errors) and
delete keys, audited; administrators below the top-level customers get 404."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import Client

from audit.models import AuditRecord
from deploy.models import RuleChannelKey
from tenants import permissions as perms
from tests.fixtures import PASSWORD, Cast, make_admin

from .gpgkeys import SigningKey, signing_key

pytestmark = pytest.mark.django_db

URL = "/servers/rule-keys/"
CHANNEL = "rules.ums.test"


@pytest.fixture(scope="module")
def key() -> Iterator[SigningKey]:
    with signing_key("Portal Channel Key") as made:
        yield made


def _portal(admin) -> Client:
    client = Client()
    assert client.login(username=admin.username, password=PASSWORD)
    return client


def test_operators_set_and_delete_keys_with_form_errors(cast: Cast, key, settings) -> None:
    settings.UMS_SA_UPDATE_CHANNELS = [CHANNEL, "updates.spamassassin.org"]
    web = _portal(cast.root_admin)
    page = web.get("/servers/").content.decode()
    assert URL in page  # linked from the servers page, beside the certificates
    page = web.get(URL).content.decode()
    assert "updates.spamassassin.org" in page and 'id="rule-channels"' in page
    for data, field in (
        ({"channel": CHANNEL, "public_key": "hello"}, "public_key"),
        ({"channel": CHANNEL, "public_key": key.public, "key_id": "0123456789ABCDEF"}, "key_id"),
        ({"channel": CHANNEL, "key_id": key.fingerprint}, "public_key"),
        ({"channel": "nodots", "public_key": key.public}, "channel"),
    ):
        response = web.post(URL, data)
        assert response.status_code == 400, data
        assert set(response.context["form"].errors) == {field}, response.context["form"].errors
    assert not RuleChannelKey.objects.exists()
    response = web.post(
        URL, {"channel": CHANNEL, "public_key": key.public, "key_id": key.fingerprint[-16:]}
    )
    assert response.status_code == 302
    assert RuleChannelKey.objects.get(channel=CHANNEL).fingerprints == [key.fingerprint]
    set_record = AuditRecord.objects.get(action="rule_channel_key.set")
    assert set_record.actor_id == cast.root_admin.pk
    page = web.get(URL).content.decode()
    assert key.fingerprint in page and f"{URL}{CHANNEL}/delete/" in page
    assert web.post(f"{URL}{CHANNEL}/delete/").status_code == 302
    assert not RuleChannelKey.objects.exists()
    assert AuditRecord.objects.filter(action="rule_channel_key.delete").count() == 1
    assert web.post(f"{URL}{CHANNEL}/delete/").status_code == 404


def test_non_operators_get_404_and_viewers_cannot_change(cast: Cast, key) -> None:
    RuleChannelKey.objects.create(channel=CHANNEL, public_key=key.public, fingerprints=["AB"])
    for admin in (cast.sub_admin, cast.sibling_admin, cast.ministry_viewer):
        web = _portal(admin)
        assert web.get(URL).status_code == 404
        assert web.post(URL, {"channel": CHANNEL, "public_key": key.public}).status_code == 404
        assert web.post(f"{URL}{CHANNEL}/delete/").status_code == 404
        assert URL not in web.get("/servers/").content.decode()
    # An operator who may only view sees the keys but no form, and cannot change them.
    viewer = make_admin(cast.provider, "root.viewer", [perms.SERVERS_VIEW])
    web = _portal(viewer)
    page = web.get(URL).content.decode()
    assert CHANNEL in page and "Set the key" not in page
    assert web.post(URL, {"channel": CHANNEL, "public_key": key.public}).status_code == 404
    assert web.post(f"{URL}{CHANNEL}/delete/").status_code == 403
    assert RuleChannelKey.objects.filter(channel=CHANNEL).exists()
    assert not AuditRecord.objects.filter(action__startswith="rule_channel_key").exists()
