"""State changes of team chat: realms (create, change, delete) and their syncs.

Every function takes ``actor=``, runs in one transaction and writes its audit record
there; talking to the Zulip server is a job (``chat.sync_realm``) started after commit.
Chat uses the mail permissions: its users are the mailboxes.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import F
from django.utils.translation import gettext as _

from tenants import permissions as perms
from tenants.models import Customer
from ums import auditing, jobs
from ums.actions import action, recheck_in_scope, require_in_scope, require_permission
from ums.models import Job

from .models import ChatRealm

SYNC_JOB = "chat.sync_realm"
SECRET_FIELDS = frozenset({"bot_api_key"})
REALM_FIELDS = (frozenset(ChatRealm.audit_fields) - {"customer"}) | SECRET_FIELDS
STREAM_NAME_MAX = 60


def _check(realm: ChatRealm) -> None:
    errors: dict[str, list] = {}
    try:
        realm.full_clean(exclude=["customer_path", "customer"], validate_constraints=False)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    streams = realm.default_streams
    if not isinstance(streams, list) or not all(
        isinstance(s, str) and s.strip() == s and 0 < len(s) <= STREAM_NAME_MAX
        and s.isprintable()
        for s in streams
    ):  # fmt: skip
        errors.setdefault("default_streams", []).append(
            _("A list of stream names, each 1 to %(max)s printable characters.")
            % {"max": STREAM_NAME_MAX}
        )
    elif len(set(streams)) != len(streams):
        errors.setdefault("default_streams", []).append(_("A stream is listed twice."))
    if not realm.pk and not realm.bot_api_key:
        errors.setdefault("bot_api_key", []).append(_("This field is required."))
    if errors:
        raise ValidationError(errors)


@action
def create_realm(*, actor: Any, customer: Customer, **fields: Any) -> ChatRealm:
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(customer, actor)
    unknown = set(fields) - REALM_FIELDS
    if unknown:
        raise ValidationError({k: _("This field cannot be changed here.") for k in unknown})
    if ChatRealm.objects.filter(customer=customer).exists():
        raise ValidationError({"customer": _("This customer already has a chat organisation.")})
    realm = ChatRealm(customer=customer, customer_path=customer.path, **fields)
    _check(realm)
    realm.save()
    after = auditing.snapshot(realm)
    after["secrets_set"] = sorted(f for f in SECRET_FIELDS if getattr(realm, f))
    auditing.record("chat_realm.create", obj=realm, after=after)
    recheck_in_scope(realm, actor)
    enqueue_sync(realm, actor=actor)  # a new realm is behind already (applied 0 < desired 1)
    return realm


@action
def update_realm(*, actor: Any, realm: ChatRealm, **changes: Any) -> ChatRealm:
    """Change a realm; a blank API key keeps the stored one (it is never shown)."""
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(realm, actor)
    unknown = set(changes) - REALM_FIELDS
    if unknown:
        raise ValidationError({k: _("This field cannot be changed here.") for k in unknown})
    realm = ChatRealm.objects.select_for_update().get(pk=realm.pk)
    before = auditing.snapshot(realm)
    old_key = realm.bot_api_key
    for key, value in changes.items():
        if key in SECRET_FIELDS and not value:
            continue
        setattr(realm, key, value)
    _check(realm)
    realm.save()
    changed_before, changed_after = auditing.diff(before, auditing.snapshot(realm))
    if realm.bot_api_key != old_key:
        changed_after["secrets_changed"] = ["bot_api_key"]
    if changed_after:
        auditing.record("chat_realm.update", obj=realm, before=changed_before, after=changed_after)
        start_sync(actor=actor, realm=realm, reason="changed")
        realm.refresh_from_db()
    return realm


@action
def delete_realm(*, actor: Any, realm: ChatRealm) -> None:
    """Forget a realm (its users stay on the Zulip server: UMS no longer manages them)."""
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(realm, actor)
    auditing.record("chat_realm.delete", obj=realm, before=auditing.snapshot(realm))
    realm.delete()


@action
def start_sync(*, actor: Any, realm: ChatRealm, reason: str = "requested") -> Job | None:
    """Ask for a sync: bump the realm's desired generation and queue a job unless one is
    already waiting (it will apply the new generation too). Audited when asked by hand."""
    if actor is not None and reason == "requested":
        require_permission(actor, perms.MAIL_MANAGE)
        require_in_scope(realm, actor)
        auditing.record("chat_realm.sync", obj=realm, extra={"reason": reason})
    ChatRealm.objects.filter(pk=realm.pk).update(desired_generation=F("desired_generation") + 1)
    return enqueue_sync(realm, actor=actor)


def enqueue_sync(realm: ChatRealm, *, actor: Any = None) -> Job | None:
    if not realm.is_enabled:
        return None
    waiting = Job.objects.filter(kind=SYNC_JOB, object_id=str(realm.pk), status=Job.PENDING).first()
    if waiting is not None:
        return waiting
    return jobs.enqueue(
        SYNC_JOB,
        actor=actor,
        title=_("Sync chat organisation %(name)s") % {"name": realm.name},
        customer=realm.customer,
        params={"realm_id": realm.pk},
        target=realm,
    )
