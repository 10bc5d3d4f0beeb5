"""Which DKIM key signs a domain's mail (the rule the DNS page shows and converge renders)."""

from __future__ import annotations

from collections.abc import Collection

from . import choices as mail_choices
from .models import DkimKey


def signing_keys(domain_ids: Collection[int]) -> dict[int, tuple[str, str]]:
    """Per domain id, (selector, private key PEM) of the key its mail is signed with.

    A domain without an active key is not signed. The active key signs when its TXT
    record was seen published by a DNS check (mail.dkim_dns), or when no retired key
    remains to fall back on (a domain's first key). Otherwise, right after a rotation,
    the newest retired key keeps signing: receivers can still fetch its record, while
    the new one may not be in DNS yet. Deleting the retired key moves signing at once.
    """
    rows = (
        DkimKey.objects.filter(domain_id__in=domain_ids)
        .order_by("domain_id", "created_at", "pk")
        .values_list("pk", "domain_id", "state", "dns_status")
    )
    active: dict[int, tuple[int, str]] = {}
    retired: dict[int, int] = {}
    for pk, domain_id, state, dns_status in rows:
        if state == mail_choices.DKIM_ACTIVE:
            active[domain_id] = (pk, dns_status)
        else:
            retired[domain_id] = pk  # ordered: the newest wins
    chosen = {
        domain_id: pk if status == mail_choices.DNS_MATCH or domain_id not in retired
        else retired[domain_id]
        for domain_id, (pk, status) in active.items()
    }  # fmt: skip
    # Model instances here: the private key field decrypts on load (one row per domain).
    return {
        key.domain_id: (key.selector, key.private_key)
        for key in DkimKey.objects.filter(pk__in=chosen.values())
    }
