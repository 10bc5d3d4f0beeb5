"""Channel signing keys through the API: parsed with GnuPG on the controller, garbage
refused as field errors, operators only, audited. (The node side, a signed update
applied and a badly signed one refused: test_rule_updates.py.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from audit.models import AuditRecord
from deploy.models import RuleChannelKey
from deploy.rule_updates.keys import node_keys
from tests.api.contracts import COVERED
from tests.fixtures import Cast, token_client

from .gpgkeys import SigningKey, signing_key

pytestmark = pytest.mark.django_db

COVERED.update({"rule-channel-keys", "rule-channel-key"})  # operators only: tested below
CHANNEL = "rules.ums.test"
URL = f"/api/v1/rule-channel-keys/{CHANNEL}/"


@pytest.fixture(scope="module")
def key() -> Iterator[SigningKey]:
    with signing_key("Channel Key") as made:
        yield made


def test_operators_set_a_parsed_key_and_garbage_is_a_field_error(cast: Cast, key) -> None:
    api = token_client(cast.root_admin)
    for body, field in (
        ({"publicKey": "hello"}, "publicKey"),
        (
            {
                "publicKey": "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP "
                "PUBLIC KEY BLOCK-----\n"
            },
            "publicKey",
        ),
        ({"publicKey": key.public, "keyId": "xyz"}, "keyId"),
        ({"publicKey": key.public, "keyId": "0123456789ABCDEF"}, "keyId"),
        ({"keyId": key.fingerprint}, "publicKey"),
    ):
        response = api.put(URL, body, format="json")
        assert response.status_code == 400, response.content
        assert set(response.json()["errors"]) == {field}, response.content
    assert (
        api.put(
            "/api/v1/rule-channel-keys/nodots/", {"publicKey": key.public}, format="json"
        ).status_code
        == 404
    )
    assert not RuleChannelKey.objects.exists()

    response = api.put(
        URL, {"publicKey": key.public, "keyId": key.fingerprint[-16:]}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["fingerprints"] == [key.fingerprint]
    assert api.get("/api/v1/rule-channel-keys/").json()[0]["channel"] == CHANNEL
    assert node_keys([CHANNEL])[CHANNEL]["fingerprints"] == [key.fingerprint]
    assert AuditRecord.objects.filter(action="rule_channel_key.set").count() == 1
    assert api.delete(URL).status_code == 204
    assert api.delete(URL).status_code == 404
    assert AuditRecord.objects.filter(action="rule_channel_key.delete").count() == 1


def test_tenants_cannot_see_or_set_channel_keys(cast: Cast, key) -> None:
    from rest_framework.test import APIClient

    assert APIClient().get("/api/v1/rule-channel-keys/").status_code in (401, 403)
    for admin in (cast.sub_admin, cast.sibling_admin):
        api = token_client(admin)
        assert api.get("/api/v1/rule-channel-keys/").status_code == 403
        assert api.put(URL, {"publicKey": key.public}, format="json").status_code == 403
    assert not RuleChannelKey.objects.exists()
