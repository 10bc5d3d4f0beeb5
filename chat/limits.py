"""Chat users counted in the subtree resource limits (``tenants.ResourceLimit``).

Usage is what the last syncs provisioned (:class:`chat.models.ChatAccount`, one row per
user, stamped with the mailbox's customer path), summed per subtree in one query. A sync
creates users only while every limited ancestor has room (:func:`room_left`).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Count, Q

from tenants.limits import ResourceLimit

from .models import ChatAccount


def usage_of_subtrees(paths: Iterable[str]) -> dict[str, dict[str, int]]:
    wanted = list(dict.fromkeys(paths))
    if not wanted:
        return {}
    counts = ChatAccount.objects.filter(is_active=True).aggregate(
        **{
            f"p{i}": Count("pk", filter=Q(customer_path__startswith=p))
            for i, p in enumerate(wanted)
        }
    )
    return {p: {"chat_users": int(counts[f"p{i}"] or 0)} for i, p in enumerate(wanted)}


def within_limits(realm_id: int, realm_path: str, users: list[tuple[str, str]]) -> set[str]:
    """The e-mails of ``users`` ((email, customer path), in priority order) that fit every
    chat users limit over them, counting the other realms' users already provisioned."""
    ids = {int(part) for part in realm_path.split("/") if part}
    caps = {
        row.customer_path: row.max_chat_users
        for row in ResourceLimit.objects.filter(max_chat_users__isnull=False).filter(
            Q(customer_id__in=ids) | Q(customer_path__startswith=realm_path)
        )
    }
    if not caps:
        return {email for email, _path in users}
    others = ChatAccount.objects.filter(is_active=True).exclude(realm_id=realm_id)
    used = {path: others.filter(customer_path__startswith=path).count() for path in caps}
    fits = set()
    for email, path in users:
        over = [p for p in caps if path.startswith(p) and used[p] >= caps[p]]
        if over:
            continue
        for p in caps:
            if path.startswith(p):
                used[p] += 1
        fits.add(email)
    return fits
