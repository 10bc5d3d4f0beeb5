"""Bring one Zulip realm in line with the tree: level-triggered, safe to run again.

Reads the realm's users and streams from the server, compares them with what the tree
wants (:mod:`chat.desired`) and applies only the differences:

* a wanted address without a user is created (a random password: users sign in through
  the organisation's single sign-on, never with a password UMS would have to know);
  a deactivated one is reactivated;
* an active user whose address is one of the realm's managed domains and is no longer
  wanted (mailbox deleted, disabled or denied chat) is deactivated; anyone else the
  realm has (its owners, bots, guests from elsewhere) is left alone;
* every default stream exists, is a default stream, has the realm's retention, and every
  wanted user is subscribed to it.

A worker that dies half-way leaves a realm that the next run finishes: each step reads
the server's state first.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.utils import timezone

from .desired import managed_domains, wanted_users
from .limits import within_limits
from .models import ChatAccount, ChatRealm
from .zulip import ZulipClient

Progress = Callable[[int, int], None]


def client_for(realm: ChatRealm) -> ZulipClient:
    return ZulipClient(realm.url, realm.bot_email, realm.bot_api_key)


def sync_realm(
    realm: ChatRealm, *, client: ZulipClient | None = None, progress: Progress | None = None
) -> dict[str, Any]:
    client = client or client_for(realm)
    wanted = wanted_users(realm)
    domains = managed_domains(realm)
    users = [u for u in client.users() if not u.is_bot]
    by_email = {u.email: u for u in users}
    created, reactivated, deactivated = [], [], []
    steps = len(wanted) + len(users) + len(realm.default_streams)
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None and (done % 50 == 0 or done == steps):
            progress(done, steps)

    # Users the server already has come first; a limit lowered later stops new users, it
    # never deactivates existing ones.
    order = sorted(wanted, key=lambda e: (e not in by_email, e))
    fits = within_limits(
        realm.pk, realm.customer_path, [(e, wanted[e].customer_path) for e in order]
    )
    over_limit = [e for e in order if e not in fits]
    allowed = set(wanted)  # over the limit or not: nobody wanted is deactivated
    wanted = {e: w for e, w in wanted.items() if e in fits}
    ids: dict[str, int] = {}
    for email, want in wanted.items():
        have = by_email.get(email)
        if have is None:
            ids[email] = client.create_user(email, want.full_name, secrets.token_urlsafe(24))
            created.append(email)
        else:
            ids[email] = have.user_id
            if not have.is_active:
                client.reactivate_user(have.user_id)
                reactivated.append(email)
        step()
    for user in users:
        domain = user.email.rpartition("@")[2]
        if user.is_active and user.email not in allowed and domain in domains:
            client.deactivate_user(user.user_id)
            deactivated.append(user.email)
        step()

    streams_changed = []
    names = [str(n) for n in realm.default_streams]
    if names:
        if ids:
            client.subscribe(names, sorted(ids.values()))
        current = {s.name: s for s in client.streams()}
        for name in names:
            stream = current.get(name)
            if stream is None:  # nobody to subscribe yet: created with the bot alone
                client.subscribe([name], [])
                stream = {s.name: s for s in client.streams()}[name]
            if not stream.is_default:
                client.add_default_stream(stream.stream_id)
                streams_changed.append(f"{name}: default")
            if stream.message_retention_days != realm.retention_days:
                client.set_retention(stream.stream_id, realm.retention_days)
                streams_changed.append(f"{name}: retention {realm.retention_days}")
            step()
    _record_accounts(realm, wanted, ids)
    return {
        "users": len(wanted),
        "created": created,
        "reactivated": reactivated,
        "deactivated": deactivated,
        "streams": streams_changed,
        "over_limit": over_limit,
    }


@transaction.atomic
def _record_accounts(realm: ChatRealm, wanted: dict, ids: dict[str, int]) -> None:
    """The realm's UMS-provisioned users as the sync left them (replaced as a whole)."""
    ChatAccount.objects.filter(realm=realm).delete()
    ChatAccount.objects.bulk_create(
        ChatAccount(
            realm=realm,
            customer_path=want.customer_path,
            email=email,
            full_name=want.full_name[:200],
            zulip_user_id=ids[email],
        )
        for email, want in wanted.items()
    )
    ChatRealm.objects.filter(pk=realm.pk).update(last_sync_at=timezone.now(), last_error="")
