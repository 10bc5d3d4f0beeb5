"""Who must use a second factor, and who has one.

"Two-factor required" is set on a customer and holds for every administrator of that
customer and of every customer below it. A customer below can add the requirement but never
lift one set above it: the effective value is "required anywhere on the path to the root".
"""

from __future__ import annotations

from django.db.models import Exists, OuterRef, Q

from ..models import Administrator, Customer
from ..models_identity import TotpDevice, WebAuthnCredential


def path_and_ancestors(path: str) -> list[str]:
    """``/1/5/12/`` -> ``['/1/', '/1/5/', '/1/5/12/']``."""
    ids = [part for part in (path or "").split("/") if part]
    return ["/" + "/".join(ids[: i + 1]) + "/" for i in range(len(ids))]


def requiring_customer(path: str) -> Customer | None:
    """The highest customer at or above ``path`` that requires a second factor."""
    return (
        Customer.objects.filter(path__in=path_and_ancestors(path), require_two_factor=True)
        .order_by("depth")
        .first()
    )


def required_above(customer: Customer) -> Customer | None:
    """The highest strict ancestor of ``customer`` that requires a second factor."""
    return (
        Customer.objects.filter(path__in=customer.ancestor_paths[:-1], require_two_factor=True)
        .order_by("depth")
        .first()
    )


def two_factor_required(admin: Administrator) -> bool:
    return Customer.objects.filter(
        path__in=path_and_ancestors(admin.customer_path), require_two_factor=True
    ).exists()


def _confirmed_totp() -> Exists:
    return Exists(TotpDevice.objects.filter(owner=OuterRef("pk"), confirmed_at__isnull=False))


def _any_key() -> Exists:
    return Exists(WebAuthnCredential.objects.filter(owner=OuterRef("pk")))


def with_factor_flags(queryset):  # type: ignore[no-untyped-def]
    """Annotate administrators with ``has_totp`` and ``has_key`` (two EXISTS, no N+1)."""
    return queryset.annotate(has_totp=_confirmed_totp(), has_key=_any_key())


def is_enrolled(admin: Administrator) -> bool:
    """A confirmed authenticator app or at least one security key (one query)."""
    return Administrator.objects.filter(Q(_confirmed_totp()) | Q(_any_key()), pk=admin.pk).exists()


def has_totp(admin: Administrator) -> bool:
    return TotpDevice.objects.filter(owner=admin, confirmed_at__isnull=False).exists()


def has_security_key(admin: Administrator) -> bool:
    return WebAuthnCredential.objects.filter(owner=admin).exists()


def requiring_paths(paths: list[str]) -> set[str]:
    """Of the given customer paths, those that require a second factor (one query)."""
    wanted = {p for path in paths for p in path_and_ancestors(path)}
    requiring = set(
        Customer.objects.filter(path__in=wanted, require_two_factor=True).values_list(
            "path", flat=True
        )
    )
    return {path for path in paths if any(p in requiring for p in path_and_ancestors(path))}
