"""Scoping contracts of the mail domain endpoints: domains, domain aliases, DKIM, policies."""

from __future__ import annotations

from mail import actions
from mail.models import DkimKey, Domain, DomainAlias, DomainPolicy
from tests.api.contracts import ScopedEndpointContract
from tests.fixtures import Cast
from tests.mail.helpers import make_domain


class TestMailDomainEndpoint(ScopedEndpointContract):
    basename = "mail-domain"
    model = Domain
    audit_prefix = "mail.domain."

    def make_in_scope(self, cast: Cast) -> Domain:
        return make_domain(cast.ministry, "ministry.example")

    def make_outside(self, cast: Cast) -> Domain:
        return make_domain(cast.shop, "shop.example")

    def create_payload(self, cast: Cast) -> dict:
        return {"name": "statistics.example", "customer": cast.department.pk}

    def update_payload(self, cast: Cast, obj: Domain) -> dict:
        return {"defaultQuotaMb": 2048, "description": "Main domain"}

    def escape_payload(self, cast: Cast, obj: Domain) -> dict:
        return {"customer": cast.shop.pk}


class TestMailDomainAliasEndpoint(ScopedEndpointContract):
    basename = "mail-domain-alias"
    model = DomainAlias
    audit_prefix = "mail.domain_alias."

    def make_in_scope(self, cast: Cast) -> DomainAlias:
        domain = make_domain(cast.ministry, "ministry.example")
        return actions.create_domain_alias(actor=None, domain=domain, name="ministry.example.org")

    def make_outside(self, cast: Cast) -> DomainAlias:
        domain = make_domain(cast.shop, "shop.example")
        return actions.create_domain_alias(actor=None, domain=domain, name="shop.example.org")

    def create_payload(self, cast: Cast) -> dict:
        domain = make_domain(cast.department, "department.example")
        return {"name": "dept.example", "domain": domain.pk}

    def update_payload(self, cast: Cast, obj: DomainAlias) -> dict:
        return {"isEnabled": False}

    def escape_payload(self, cast: Cast, obj: DomainAlias) -> dict:
        other = make_domain(cast.shop, "shop.example")
        return {"domain": other.pk}


class TestMailDkimKeyEndpoint(ScopedEndpointContract):
    basename = "mail-dkim-key"
    model = DkimKey
    audit_prefix = "mail.dkim."

    def make_in_scope(self, cast: Cast) -> DkimKey:
        domain = make_domain(cast.ministry, "ministry.example")
        return actions.generate_dkim_key(actor=None, domain=domain, selector="mail2026")

    def make_outside(self, cast: Cast) -> DkimKey:
        domain = make_domain(cast.shop, "shop.example")
        return actions.generate_dkim_key(actor=None, domain=domain, selector="mail2026")

    def create_payload(self, cast: Cast) -> dict:
        domain = make_domain(cast.department, "department.example")
        return {"domain": domain.pk, "selector": "dept1"}


class TestMailDomainPolicyEndpoint(ScopedEndpointContract):
    basename = "mail-domain-policy"
    model = DomainPolicy
    audit_prefix = "mail.domain_policy."
    list_key = "domain"

    def make_in_scope(self, cast: Cast) -> DomainPolicy:
        domain = make_domain(cast.ministry, "ministry.example")
        return actions.update_domain_policy(actor=None, domain=domain, greylisting=True)

    def make_outside(self, cast: Cast) -> DomainPolicy:
        domain = make_domain(cast.shop, "shop.example")
        return actions.update_domain_policy(actor=None, domain=domain, greylisting=True)

    def update_payload(self, cast: Cast, obj: DomainPolicy) -> dict:
        return {"protocolAccess": {"pop3": "allow"}, "spamTagScore": "4.5"}
