"""Settings at several levels of the tree, so the portal shows inheritance at work.

* filtering: the provider lowers the spam scores for everyone; the government blocks more
  attachment types and denies POP3; the Ministry of Finance's domain turns greylisting on
  and holds spam earlier; the ISP allows plain IMAP for its legacy customers;
* two-factor authentication required for the Ministry of Health and everything below it
  (no demo administrator lives there, so the printed logins work without a second factor);
* held-mail retention: 60 days for the government, 14 for the Ministry of Finance;
* resource limits: the provider caps the ISP, the ISP caps the bakery.

Each is applied once (see :mod:`.marks`): an administrator's later change is kept.
"""

from __future__ import annotations

from typing import Any

from mail import actions as mail_actions
from mail.models import CustomerPolicy, Domain, DomainPolicy
from spamhold import actions as spamhold_actions
from spamhold.models import HoldRetention
from tenants import identity_actions, limit_actions
from tenants.limits import ResourceLimit
from tenants.models import Customer

from .marks import recorded
from .tree import People

# (customer, acting administrator, policy changes)
CUSTOMER_POLICIES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("RackCorp UMS", "admin", {"spam_tag_score": 4.0, "spam_hold_score": 7.5}),
    (
        "Government of Demoland",
        "gov.it",
        {
            "blocked_extensions": ["exe", "js", "vbs", "scr", "iso", "img", "lnk", "docm"],
            "antivirus": True,
            "protocol_access": {"pop3s": "deny", "pop3": "deny"},
        },
    ),
    ("Demo ISP", "isp.admin", {"protocol_access": {"imap": "allow"}}),
)
# (domain, acting administrator, policy changes)
DOMAIN_POLICIES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    (
        "finance.demoland.demo",
        "finance.it",
        {"greylisting": True, "spam_hold_score": 6.0, "sender_block": ["bulk-offers.demo"]},
    ),
)
TWO_FACTOR = (("Ministry of Health", "gov.it"),)
RETENTION = (("Government of Demoland", "gov.it", 60), ("Ministry of Finance", "gov.it", 14))
# (customer, acting administrator, limits); an administrator never sets their own.
LIMITS: tuple[tuple[str, str, dict[str, int]], ...] = (
    (
        "Demo ISP",
        "admin",
        {"max_domains": 10, "max_mailboxes": 100, "max_aliases": 200, "max_quota_gb": 200},
    ),
    ("Bakery Ltd", "isp.admin", {"max_mailboxes": 10, "max_quota_gb": 10}),
    ("Government of Demoland", "admin", {"max_mailboxes": 5000, "max_quota_gb": 20000}),
)


def seed_policies(people: People) -> None:
    customers = people.customers
    for name, admin, changes in CUSTOMER_POLICIES:
        customer = customers[name]
        if not recorded(_policy_actions("customer"), **_ref(CustomerPolicy, customer.pk)):
            mail_actions.update_customer_policy(
                actor=people.actor(admin), customer=customer, **changes
            )
    for domain_name, admin, changes in DOMAIN_POLICIES:
        domain = Domain.objects.filter(unicode_name=domain_name).first()
        if domain and not recorded(_policy_actions("domain"), **_ref(DomainPolicy, domain.pk)):
            mail_actions.update_domain_policy(actor=people.actor(admin), domain=domain, **changes)
    for name, admin in TWO_FACTOR:
        customer = customers[name]
        if not recorded("customer.two_factor_policy", **_ref(Customer, customer.pk)):
            identity_actions.set_two_factor_policy(
                actor=people.actor(admin), customer=customer, required=True
            )
    for name, admin, days in RETENTION:
        customer = customers[name]
        done = ("spamhold.retention.set", "spamhold.retention.reset")
        if not recorded(done, **_ref(HoldRetention, customer.pk)):
            spamhold_actions.set_retention(actor=people.actor(admin), customer=customer, days=days)
    for name, admin, limits in LIMITS:
        customer = customers[name]
        if not ResourceLimit.objects.filter(customer=customer).exists():
            limit_actions.set_limits(actor=people.actor(admin), customer=customer, **limits)


def _policy_actions(level: str) -> tuple[str, str]:
    return (f"mail.{level}_policy.update", f"mail.{level}_policy.reset")


def _ref(model: type, pk: int) -> dict[str, Any]:
    return {"object_type": model._meta.label_lower, "object_id": pk}
