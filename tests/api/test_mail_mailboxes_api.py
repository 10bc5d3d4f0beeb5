"""Scoping contracts of the address endpoints: mailboxes, aliases, auto-responders, Sieve."""

from __future__ import annotations

from mail import actions
from mail.models import Alias, AutoResponder, Mailbox, SieveScript
from tests.api.contracts import ScopedEndpointContract
from tests.fixtures import Cast
from tests.mail.helpers import make_alias, make_domain, make_mailbox


class TestMailMailboxEndpoint(ScopedEndpointContract):
    basename = "mail-mailbox"
    model = Mailbox
    audit_prefix = "mail.mailbox."

    def make_in_scope(self, cast: Cast) -> Mailbox:
        return make_mailbox(make_domain(cast.ministry, "ministry.example"), "alice")

    def make_outside(self, cast: Cast) -> Mailbox:
        return make_mailbox(make_domain(cast.shop, "shop.example"), "bob")

    def create_payload(self, cast: Cast) -> dict:
        domain = make_domain(cast.department, "department.example")
        return {"domain": domain.pk, "localPart": "carol", "password": "Tulip-Anvil-Sonnet-58"}

    def update_payload(self, cast: Cast, obj: Mailbox) -> dict:
        return {"quotaMb": 2048, "canSend": False, "protocolAccess": {"imap": "allow"}}

    def escape_payload(self, cast: Cast, obj: Mailbox) -> dict:
        return {"domain": make_domain(cast.shop, "shop.example").pk}


class TestMailAliasEndpoint(ScopedEndpointContract):
    basename = "mail-alias"
    model = Alias
    audit_prefix = "mail.alias."

    def make_in_scope(self, cast: Cast) -> Alias:
        return make_alias(make_domain(cast.ministry, "ministry.example"), "info", ["a@example.org"])

    def make_outside(self, cast: Cast) -> Alias:
        return make_alias(make_domain(cast.shop, "shop.example"), "info", ["b@example.org"])

    def create_payload(self, cast: Cast) -> dict:
        domain = make_domain(cast.department, "department.example")
        return {"domain": domain.pk, "localPart": "team", "kind": "group", "targets": ["x@y.org"]}

    def update_payload(self, cast: Cast, obj: Alias) -> dict:
        return {"targets": ["c@example.org", "d@example.org"]}

    def escape_payload(self, cast: Cast, obj: Alias) -> dict:
        return {"domain": make_domain(cast.shop, "shop.example").pk}


class TestMailAutoResponderEndpoint(ScopedEndpointContract):
    basename = "mail-autoresponder"
    model = AutoResponder
    audit_prefix = "mail.autoresponder."
    list_key = "mailbox"

    def _make(self, mailbox: Mailbox) -> AutoResponder:
        return actions.set_autoresponder(
            actor=None, mailbox=mailbox, is_enabled=True, subject="Away", body="Back on Monday."
        )

    def make_in_scope(self, cast: Cast) -> AutoResponder:
        return self._make(make_mailbox(make_domain(cast.ministry, "ministry.example"), "alice"))

    def make_outside(self, cast: Cast) -> AutoResponder:
        return self._make(make_mailbox(make_domain(cast.shop, "shop.example"), "bob"))

    def create_payload(self, cast: Cast) -> dict:
        mailbox = make_mailbox(make_domain(cast.department, "department.example"), "carol")
        return {"mailbox": mailbox.pk, "isEnabled": True, "subject": "Out", "body": "Away."}

    def update_payload(self, cast: Cast, obj: AutoResponder) -> dict:
        return {"intervalDays": 3, "endDate": "2099-01-31"}


class TestMailSieveScriptEndpoint(ScopedEndpointContract):
    basename = "mail-sieve-script"
    model = SieveScript
    audit_prefix = "mail.sieve."

    def _make(self, mailbox: Mailbox) -> SieveScript:
        return actions.create_sieve_script(
            actor=None, mailbox=mailbox, name="main", mode="raw", script="keep;\n"
        )

    def make_in_scope(self, cast: Cast) -> SieveScript:
        return self._make(make_mailbox(make_domain(cast.ministry, "ministry.example"), "alice"))

    def make_outside(self, cast: Cast) -> SieveScript:
        return self._make(make_mailbox(make_domain(cast.shop, "shop.example"), "bob"))

    def create_payload(self, cast: Cast) -> dict:
        mailbox = make_mailbox(make_domain(cast.department, "department.example"), "carol")
        rules = [
            {
                "name": "News",
                "match": "any",
                "conditions": [{"field": "from", "op": "contains", "value": "news@"}],
                "actions": [{"type": "fileinto", "folder": "News"}, {"type": "stop"}],
            }
        ]
        return {"mailbox": mailbox.pk, "name": "sort", "mode": "rules", "rules": rules}

    def update_payload(self, cast: Cast, obj: SieveScript) -> dict:
        return {"script": 'require ["fileinto"];\nfileinto "Archive";\n'}

    def escape_payload(self, cast: Cast, obj: SieveScript) -> dict:
        other = make_mailbox(make_domain(cast.shop, "shop.example"), "bob")
        return {"mailbox": other.pk}
