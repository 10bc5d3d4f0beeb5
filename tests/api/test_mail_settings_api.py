"""Scoping contracts of customer-level mail endpoints: policy, limits, address book, imports."""

from __future__ import annotations

from mail import actions
from mail.models import CsvImport, CustomerPolicy
from tenants import limit_actions
from tenants.limits import ResourceLimit
from tenants.models import Customer
from tests.api.contracts import ScopedEndpointContract
from tests.fixtures import Cast
from tests.mail.helpers import make_domain


class TestMailCustomerPolicyEndpoint(ScopedEndpointContract):
    basename = "mail-customer-policy"
    model = CustomerPolicy
    audit_prefix = "mail.customer_policy."
    list_key = "customer"

    def make_in_scope(self, cast: Cast) -> CustomerPolicy:
        return actions.update_customer_policy(actor=None, customer=cast.ministry, antivirus=True)

    def make_outside(self, cast: Cast) -> CustomerPolicy:
        return actions.update_customer_policy(actor=None, customer=cast.shop, antivirus=True)

    def update_payload(self, cast: Cast, obj: CustomerPolicy) -> dict:
        return {"protocolAccess": {"imap": "allow"}, "blockedExtensions": ["exe", ".ISO"]}


class TestMailLimitEndpoint(ScopedEndpointContract):
    basename = "mail-limit"
    model = ResourceLimit
    audit_prefix = "limits."
    list_key = "customer"

    def make_in_scope(self, cast: Cast) -> ResourceLimit:
        return limit_actions.set_limits(actor=None, customer=cast.ministry, max_mailboxes=100)

    def make_outside(self, cast: Cast) -> ResourceLimit:
        return limit_actions.set_limits(actor=None, customer=cast.shop, max_mailboxes=100)

    def update_payload(self, cast: Cast, obj: ResourceLimit) -> dict:
        return {"maxMailboxes": 50, "maxQuotaGb": 500}


class TestMailAddressBookEndpoint(ScopedEndpointContract):
    basename = "mail-address-book"
    model = Customer
    can_delete = False

    def make_in_scope(self, cast: Cast) -> Customer:
        return cast.ministry

    def make_outside(self, cast: Cast) -> Customer:
        return cast.shop


class TestMailImportEndpoint(ScopedEndpointContract):
    basename = "mail-import"
    model = CsvImport
    audit_prefix = "mail.import."
    can_delete = False

    def _make(self, customer: Customer) -> CsvImport:
        return CsvImport.objects.create(customer=customer, customer_path=customer.path)

    def make_in_scope(self, cast: Cast) -> CsvImport:
        return self._make(cast.ministry)

    def make_outside(self, cast: Cast) -> CsvImport:
        return self._make(cast.shop)

    def create_payload(self, cast: Cast) -> dict:
        make_domain(cast.department, "department.example")
        csv = "type,address,password\nmailbox,dan@department.example,Quiet-Harbor-Lamp-82\n"
        return {"csv": csv, "dryRun": False}
