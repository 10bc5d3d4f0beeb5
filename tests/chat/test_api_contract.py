"""Scoping contract of the chat API (tests/api/contracts.py): organisations and accounts."""

from __future__ import annotations

from typing import Any

from chat import actions
from chat.models import ChatAccount, ChatRealm
from tests.api.contracts import ScopedEndpointContract
from tests.fixtures import Cast, token_client

# Nothing listens there: a sync started by these tests fails fast, which they ignore.
NOWHERE = "http://127.0.0.1:9"


def make_realm(customer: Any, name: str = "Chat") -> ChatRealm:
    return actions.create_realm(
        actor=None, customer=customer, name=name, url=NOWHERE,
        bot_email="bot@chat.example", bot_api_key="secret-key-1",
    )  # fmt: skip


class TestChatRealmEndpoint(ScopedEndpointContract):
    basename = "chatrealm"
    model = ChatRealm
    audit_prefix = "chat_realm."

    def make_in_scope(self, cast: Cast) -> ChatRealm:
        return make_realm(cast.ministry, "Ministry chat")

    def make_outside(self, cast: Cast) -> ChatRealm:
        return make_realm(cast.shop, "Shop chat")

    def create_payload(self, cast: Cast) -> dict:
        return {
            "customer": cast.government.pk, "name": "Gov chat", "url": NOWHERE,
            "botEmail": "bot@gov.example", "botApiKey": "secret-key-2",
        }  # fmt: skip

    def update_payload(self, cast: Cast, obj: ChatRealm) -> dict:
        return {"retentionDays": 15}

    def escape_payload(self, cast: Cast, obj: ChatRealm) -> dict:
        return {"customer": cast.isp.pk}


class TestChatAccountEndpoint(ScopedEndpointContract):
    basename = "chataccount"
    model = ChatAccount
    can_delete = False

    def _account(self, customer: Any, email: str) -> ChatAccount:
        realm = make_realm(customer, f"Chat {email}")
        return ChatAccount.objects.create(
            realm=realm, customer_path=customer.path, email=email, zulip_user_id=7
        )

    def make_in_scope(self, cast: Cast) -> ChatAccount:
        return self._account(cast.ministry, "a@ministry.example")

    def make_outside(self, cast: Cast) -> ChatAccount:
        return self._account(cast.shop, "b@shop.example")


def test_api_key_is_write_only_and_encrypted_at_rest(cast: Cast) -> None:
    realm = make_realm(cast.ministry)
    body = token_client(cast.sub_admin).get(f"/api/v1/chat/realms/{realm.pk}/").json()
    assert "secret-key-1" not in str(body) and body["hasApiKey"] is True
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT bot_api_key FROM chat_chatrealm WHERE id = %s", [realm.pk])
        stored = cursor.fetchone()[0]
    assert "secret-key-1" not in stored
