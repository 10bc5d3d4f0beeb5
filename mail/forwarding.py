"""Forwarding loops among hosted addresses, refused before they are saved.

An address *passes mail on without keeping it* when it is an enabled alias or group (to
its targets) or a mailbox forwarding without a copy (to its forward targets). Postfix
expands such chains itself; a chain that comes back to where it started delivers to no
one (Postfix stops at its recursion limit and bounces). A mailbox that keeps a copy ends
a chain: mail stops there whatever its forwards do next (Postfix delivers each address
once). Addresses at an alias domain are the same addresses at the domain it aliases.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from .models import Alias, DomainAlias, Mailbox

#: How many addresses a chain may reach before the check gives up looking (Postfix's own
#: virtual_alias_expansion_limit is 1000 addresses per message).
MAX_ADDRESSES = 1000


def _canonical(addresses: Iterable[str]) -> list[str]:
    """``local@alias-domain`` as ``local@domain`` (lowercase); others unchanged."""
    items = [a.lower() for a in addresses]
    domains = {a.rpartition("@")[2] for a in items}
    real = dict(
        DomainAlias.objects.filter(name__in=domains, is_enabled=True).values_list(
            "name", "domain__name"
        )
    )
    out = []
    for address in items:
        local, _sep, domain = address.rpartition("@")
        out.append(f"{local}@{real.get(domain, domain)}")
    return out


def _next_hops(addresses: list[str], changed: str, new_targets: list[str]) -> dict[str, list[str]]:
    """Where each address passes mail on to, without keeping it (the change applied)."""
    hops: dict[str, list[str]] = {}
    for email, targets in Alias.objects.filter(email__in=addresses, is_enabled=True).values_list(
        "email", "targets"
    ):
        hops[email] = list(targets)
    for email, targets in (
        Mailbox.objects.filter(email__in=addresses, forward_keep_copy=False, is_enabled=True)
        .exclude(forward_to=[])
        .values_list("email", "forward_to")
    ):
        hops[email] = list(targets)
    if changed in addresses:
        hops[changed] = new_targets
    return hops


def find_loop(email: str, targets: list[str]) -> list[str] | None:
    """The chain back to ``email`` if it passed mail on to ``targets`` without keeping it;
    None when there is no such chain."""
    start = _canonical([email])[0]
    new_targets = _canonical(targets)
    parent: dict[str, str] = dict.fromkeys(new_targets, start)
    frontier = list(dict.fromkeys(new_targets))
    while frontier and len(parent) <= MAX_ADDRESSES:
        if start in frontier:
            chain = [start]
            node = parent[start]
            while node != start:
                chain.append(node)
                node = parent[node]
            chain.append(start)
            return list(reversed(chain))
        hops = _next_hops(frontier, start, new_targets)
        following: list[str] = []
        for address in frontier:
            for target in _canonical(hops.get(address, [])):
                if target not in parent:
                    parent[target] = address
                    following.append(target)
        frontier = following
    return None


def refuse_loop(email: str, targets: list[str], field: str) -> None:
    """ValidationError on ``field`` when passing mail to ``targets`` makes a loop."""
    chain = find_loop(email, targets)
    if chain:
        raise ValidationError(
            {
                field: _("This makes a forwarding loop in which no one gets the mail: %(chain)s.")
                % {"chain": " → ".join(chain)}
            }
        )
