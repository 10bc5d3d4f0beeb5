"""Every state change of domains, mailboxes, aliases, auto-responders, filters and policies.

Each function takes a keyword-only ``actor`` (None: the system or CLI), runs in one
transaction (``@action``), checks permission and scope, validates with :mod:`mail.validators`
(ValidationError keyed by snake_case field), checks resource limits (:mod:`mail.limits`),
writes its audit record in the same transaction and announces the change after commit
(:mod:`mail.signals`). Portal, API, CSV import and commands all call these.
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, PermissionDenied, ValidationError
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from tenants import permissions as perms
from tenants.models import Customer
from ums import auditing
from ums.actions import action, recheck_in_scope, require_in_scope, require_permission
from ums.validators import no_control_characters

from . import choices, dkim, forwarding, limits, passwords, policy, sieve, validators
from .models import (
    Alias,
    AutoResponder,
    CustomerPolicy,
    DkimKey,
    Domain,
    DomainAlias,
    DomainPolicy,
    Mailbox,
    PendingPassword,
    SieveScript,
)
from .signals import announce

# ----------------------------------------------------------------------------- helpers


def is_root_administrator(actor: Any) -> bool:
    """The system, or an administrator whose home customer has no parent."""
    if actor is None:
        return True
    return len([p for p in (actor.customer_path or "").split("/") if p]) == 1


class FieldErrors:
    """Collects the errors of every field, so one refusal names all bad fields at once.

    ``with errors.check(): ...`` keeps a ValidationError instead of stopping; ``raise_any``
    then raises them together (portal forms and API responses show them side by side).
    """

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    @contextmanager
    def check(self) -> Iterator[None]:
        try:
            yield
        except ValidationError as exc:
            self.add(exc)

    def add(self, exc: ValidationError) -> None:
        if hasattr(exc, "error_dict"):
            for key, messages in exc.message_dict.items():
                self.errors.setdefault(key, []).extend(messages)
        else:
            self.errors.setdefault(NON_FIELD_ERRORS, []).extend(exc.messages)

    def raise_any(self) -> None:
        if self.errors:
            raise ValidationError(self.errors)


def _field(field: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a validator; its ValidationError becomes an error of ``field``."""
    try:
        return func(*args, **kwargs)
    except ValidationError as exc:
        raise ValidationError({field: exc.messages}) from exc


def _int(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(
            {
                field: _("Enter a whole number from %(low)d to %(high)d.")
                % {"low": low, "high": high}
            }
        )
    return value


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError({field: _("Enter true or false.")})
    return value


def _text(value: Any, field: str, max_length: int, *, multiline: bool = False) -> str:
    if not isinstance(value, str):
        raise ValidationError({field: _("Enter text.")})
    if len(value) > max_length:
        raise ValidationError({field: _("At most %(max)d characters.") % {"max": max_length}})
    if multiline:
        if any((ord(c) < 32 and c not in "\r\n\t") or ord(c) == 127 for c in value):
            raise ValidationError({field: _("Control characters are not allowed.")})
    else:
        _field(field, no_control_characters, value)
        if value != value.strip():
            raise ValidationError({field: _("Leading or trailing spaces are not allowed.")})
    return value


def _unknown(changes: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(changes) - allowed
    if unknown:
        raise ValidationError({k: _("This field cannot be changed here.") for k in unknown})


def _lock_name(name: str) -> None:
    """Serialise creates of the same domain name across the domain and domain-alias tables."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"mail-domain:{name}"])


def _domain_name_taken(name: str) -> bool:
    return (
        Domain.objects.filter(name=name).exists() or DomainAlias.objects.filter(name=name).exists()
    )


def _record(verb: str, obj: models.Model, **kwargs: Any) -> None:
    auditing.record(verb, obj=obj, customer=getattr(obj, "customer", None), **kwargs)


def _announce(obj: Any, domain_ids: Iterable[int], kind: str) -> None:
    announce(obj.customer_path, domain_ids, kind=kind)


def _quota(value: Any, field: str = "quota_mb") -> int:
    return _int(value, field, 1, choices.MAX_QUOTA_MB)


def _address_list(value: Any, field: str, maximum: int, *, allow_empty: bool = True) -> list[str]:
    return _field(
        field,
        validators.normalise_address_list,
        list(value) if isinstance(value, tuple) else value,
        field_max=maximum,
        allow_empty=allow_empty,
    )


def _protocol_access(value: Any, current: dict[str, str] | None = None) -> dict[str, str]:
    """Merge a {protocol: inherit|allow|deny} mapping into ``current``; "inherit" removes."""
    if not isinstance(value, dict):
        raise ValidationError({"protocol_access": _("Enter an object of protocol settings.")})
    merged = dict(current or {})
    for code, setting in value.items():
        if code not in choices.PROTOCOL_CODES:
            raise ValidationError(
                {"protocol_access": _("Unknown protocol “%(code)s”.") % {"code": str(code)[:40]}}
            )
        if setting not in choices.ACCESS_VALUES:
            raise ValidationError(
                {
                    "protocol_access": _("“%(code)s” must be inherit, allow or deny.")
                    % {"code": code}
                }
            )
        if setting == choices.INHERIT:
            merged.pop(code, None)
        else:
            merged[code] = setting
    return {code: merged[code] for code in choices.PROTOCOL_CODES if code in merged}


def check_address_free(domain: Domain, local_part: str, *, field: str = "local_part") -> str:
    """The address, or a ValidationError of ``field`` if a mailbox or alias holds it.

    Forms call it too, to flag a taken name beside the other fields' errors; actions call it
    again under the domain's lock, which is what decides.
    """
    email = f"{local_part}@{domain.name}"
    # Both tables in one round trip: every address create runs this under the domain lock.
    with connection.cursor() as cursor:
        cursor.execute(_ADDRESS_TAKEN_SQL, [email, email])
        mailbox_taken, alias_taken = cursor.fetchone()
    if mailbox_taken:
        raise ValidationError({field: _("A mailbox with this address already exists.")})
    if alias_taken:
        raise ValidationError({field: _("This address is already an alias or group.")})
    return email


_ADDRESS_TAKEN_SQL = (
    f"SELECT EXISTS (SELECT 1 FROM {Mailbox._meta.db_table} WHERE email = %s), "  # noqa: S608
    f"EXISTS (SELECT 1 FROM {Alias._meta.db_table} WHERE email = %s)"
)


def _locked_domain(domain: Domain) -> Domain:
    """The domain row, locked: every address create in a domain queues here, so a mailbox
    and an alias can never take the same address at once."""
    sql = _locked_domain_sql()
    if sql is None:
        return Domain.objects.select_for_update().select_related("customer").get(pk=domain.pk)
    with connection.cursor() as cursor:
        cursor.execute(sql, [domain.pk])
        row = cursor.fetchone()
    if row is None:
        raise Domain.DoesNotExist("Domain matching query does not exist.")
    # Every address create runs this: the queryset's statement (FOR UPDATE without OF
    # locks the customer row too, as before) written once, not compiled each time.
    domain_fields = Domain._meta.concrete_fields
    locked = Domain.from_db(
        connection.alias, [f.attname for f in domain_fields], row[: len(domain_fields)]
    )
    customer = Customer.from_db(
        connection.alias,
        [f.attname for f in Customer._meta.concrete_fields],
        row[len(domain_fields) :],
    )
    Domain._meta.get_field("customer").set_cached_value(locked, customer)
    return locked


@functools.cache
def _locked_domain_sql() -> str | None:
    """The locking read of :func:`_locked_domain`; None (use the queryset) if a column of
    either model needs a conversion from the database that raw rows would not get."""
    models_ = (Domain, Customer)
    fields = [f for model in models_ for f in model._meta.concrete_fields]
    if any(f.get_db_converters(connection) for f in fields):
        return None
    quote = connection.ops.quote_name
    columns = ", ".join(
        f"{alias}.{quote(f.column)}"
        for alias, model in zip(("d", "c"), models_, strict=True)
        for f in model._meta.concrete_fields
    )
    return (
        f"SELECT {columns} FROM {quote(Domain._meta.db_table)} d "  # noqa: S608
        f"INNER JOIN {quote(Customer._meta.db_table)} c "
        f"ON c.{quote(Customer._meta.pk.column)} = d.{quote(Domain.customer.field.column)} "
        f"WHERE d.{quote(Domain._meta.pk.column)} = %s FOR UPDATE"
    )


def _require_reserved_removal(actor: Any, local_part: str, is_system: bool = False) -> None:
    if (is_system or validators.is_reserved_local_part(local_part)) and not is_root_administrator(
        actor
    ):
        raise PermissionDenied(
            _("Only the root customer's administrators can remove postmaster@ and abuse@.")
        )


# ------------------------------------------------------------------------------ domains

DOMAIN_CHANGES = {"is_enabled", "default_quota_mb", "catch_all", "description", "webmail_name"}


def _clean_domain_fields(
    fields: dict[str, Any], errors: FieldErrors | None = None
) -> dict[str, Any]:
    """Every editable domain field checked; all errors together (into ``errors`` if given)."""
    own = errors is None
    errors = errors or FieldErrors()
    cleaned: dict[str, Any] = {}
    if "is_enabled" in fields:
        with errors.check():
            cleaned["is_enabled"] = _bool(fields["is_enabled"], "is_enabled")
    if "default_quota_mb" in fields:
        with errors.check():
            cleaned["default_quota_mb"] = _quota(fields["default_quota_mb"], "default_quota_mb")
    if "catch_all" in fields:
        value = fields["catch_all"] or ""
        with errors.check():
            cleaned["catch_all"] = (
                _field("catch_all", validators.normalise_address, value) if value else ""
            )
    if "description" in fields:
        with errors.check():
            cleaned["description"] = _text(fields["description"] or "", "description", 200)
    if "webmail_name" in fields:
        with errors.check():
            cleaned["webmail_name"] = _field(
                "webmail_name", validators.webmail_name, fields["webmail_name"] or ""
            )
    if own:
        errors.raise_any()
    return cleaned


@action
def create_domain(
    *,
    actor: Any,
    customer: Customer,
    name: str,
    contact_email: str | None = None,
    **fields: Any,
) -> Domain:
    """Create a domain with its required postmaster@ and abuse@ aliases.

    Both deliver to ``contact_email`` (by default the acting administrator's address).
    """
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(customer, actor)
    _unknown(fields, DOMAIN_CHANGES)
    errors = FieldErrors()
    ascii_name = unicode_name = ""
    with errors.check():
        ascii_name, unicode_name = _field("name", validators.normalise_domain, name)
    cleaned = _clean_domain_fields(fields, errors)
    contact = contact_email or getattr(actor, "email", "")
    if not contact:
        errors.add(
            ValidationError({"contact_email": _("Enter where postmaster@ and abuse@ deliver.")})
        )
    else:
        with errors.check():
            contact = _field("contact_email", validators.normalise_address, contact)
    errors.raise_any()
    customer = Customer.objects.get(pk=customer.pk)
    _lock_name(ascii_name)
    if _domain_name_taken(ascii_name):
        raise ValidationError({"name": _("This domain is already registered.")})
    limits.reserve(customer, actor=actor, domains=1)
    domain = Domain(
        customer=customer,
        customer_path=customer.path,
        name=ascii_name,
        unicode_name=unicode_name,
        **cleaned,
    )
    try:
        with transaction.atomic():
            domain.save()
    except IntegrityError as exc:
        raise ValidationError({"name": _("This domain is already registered.")}) from exc
    _record("mail.domain.create", domain, after=auditing.snapshot(domain))
    for local in validators.RESERVED_LOCAL_PARTS:
        alias = Alias.objects.create(
            customer=customer,
            customer_path=customer.path,
            domain=domain,
            local_part=local,
            email=f"{local}@{ascii_name}",
            kind=choices.ALIAS,
            targets=[contact],
            is_system=True,
        )
        _record("mail.alias.create", alias, after=auditing.snapshot(alias))
    _announce(domain, [domain.pk], "domain")
    recheck_in_scope(domain, actor)
    return domain


@action
def update_domain(*, actor: Any, domain: Domain, **changes: Any) -> Domain:
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(domain, actor)
    _unknown(changes, DOMAIN_CHANGES)
    cleaned = _clean_domain_fields(changes)
    domain = _locked_domain(domain)
    before = auditing.snapshot(domain)
    for key, value in cleaned.items():
        setattr(domain, key, value)
    domain.save()
    old, new = auditing.diff(before, auditing.snapshot(domain))
    if new:
        _record("mail.domain.update", domain, before=old, after=new)
        _announce(domain, [domain.pk], "domain")
    recheck_in_scope(domain, actor)
    return domain


@action
def delete_domain(*, actor: Any, domain: Domain) -> None:
    """Delete a domain without mailboxes or aliases of its own (required ones go with it)."""
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(domain, actor)
    domain = _locked_domain(domain)
    mailboxes = Mailbox.objects.filter(domain=domain).count()
    aliases = Alias.objects.filter(domain=domain, is_system=False).count()
    if mailboxes or aliases:
        raise ValidationError(
            {
                "domain": _("Delete its %(mailboxes)d mailboxes and %(aliases)d aliases first.")
                % {"mailboxes": mailboxes, "aliases": aliases}
            }
        )
    snapshot = auditing.snapshot(domain)
    domain_aliases = DomainAlias.objects.filter(domain=domain).count()
    path, pk, customer = domain.customer_path, domain.pk, domain.customer
    Alias.objects.filter(domain=domain).delete()
    domain.delete()
    limits.add(customer, domains=-(1 + domain_aliases))
    auditing.record(
        "mail.domain.delete",
        object_type="mail.domain",
        object_id=pk,
        object_repr=snapshot["name"],
        customer=customer,
        before=snapshot,
    )
    announce(path, [pk], kind="domain")


@action
def create_domain_alias(
    *, actor: Any, domain: Domain, name: str, is_enabled: bool = True
) -> DomainAlias:
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(domain, actor)
    ascii_name, unicode_name = _field("name", validators.normalise_domain, name)
    _bool(is_enabled, "is_enabled")
    domain = _locked_domain(domain)
    _lock_name(ascii_name)
    if _domain_name_taken(ascii_name):
        raise ValidationError({"name": _("This domain is already registered.")})
    limits.reserve(domain.customer, actor=actor, domains=1)
    alias = DomainAlias(
        customer=domain.customer,
        customer_path=domain.customer_path,
        domain=domain,
        name=ascii_name,
        unicode_name=unicode_name,
        is_enabled=is_enabled,
    )
    try:
        with transaction.atomic():
            alias.save()
    except IntegrityError as exc:
        raise ValidationError({"name": _("This domain is already registered.")}) from exc
    _record("mail.domain_alias.create", alias, after=auditing.snapshot(alias))
    _announce(alias, [domain.pk], "domain_alias")
    recheck_in_scope(alias, actor)
    return alias


@action
def update_domain_alias(*, actor: Any, alias: DomainAlias, **changes: Any) -> DomainAlias:
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(alias, actor)
    _unknown(changes, {"is_enabled"})
    alias = DomainAlias.objects.select_for_update().get(pk=alias.pk)
    before = auditing.snapshot(alias)
    if "is_enabled" in changes:
        alias.is_enabled = _bool(changes["is_enabled"], "is_enabled")
    alias.save()
    old, new = auditing.diff(before, auditing.snapshot(alias))
    if new:
        _record("mail.domain_alias.update", alias, before=old, after=new)
        _announce(alias, [alias.domain_id], "domain_alias")
    return alias


@action
def delete_domain_alias(*, actor: Any, alias: DomainAlias) -> None:
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(alias, actor)
    snapshot = auditing.snapshot(alias)
    customer, pk, path, domain_id = alias.customer, alias.pk, alias.customer_path, alias.domain_id
    alias.delete()
    limits.add(customer, domains=-1)
    auditing.record(
        "mail.domain_alias.delete",
        object_type="mail.domainalias",
        object_id=pk,
        object_repr=snapshot["name"],
        customer=customer,
        before=snapshot,
    )
    announce(path, [domain_id], kind="domain_alias")


# --------------------------------------------------------------------------------- DKIM


def _dkim_bits(bits: Any) -> int:
    sizes = [size for size, _label in choices.DKIM_KEY_SIZES]
    if isinstance(bits, bool) or bits not in sizes:
        raise ValidationError(
            {
                "bits": _("Choose a key size of %(sizes)s bits.")
                % {"sizes": ", ".join(map(str, sizes))}
            }
        )
    return bits


def _new_key(domain: Domain, selector: str | None, bits: int) -> DkimKey:
    selector = _field(
        "selector", validators.normalise_selector, selector or dkim.default_selector()
    )
    if DkimKey.objects.filter(domain=domain, selector=selector).exists():
        raise ValidationError({"selector": _("This domain already has a key with this selector.")})
    private_pem, public_b64 = dkim.generate(bits)
    key = DkimKey(
        customer=domain.customer,
        customer_path=domain.customer_path,
        domain=domain,
        selector=selector,
        bits=bits,
        private_key=private_pem,
        public_key=public_b64,
        state=choices.DKIM_ACTIVE,
    )
    key.save()
    return key


@action
def generate_dkim_key(
    *,
    actor: Any,
    domain: Domain,
    selector: str | None = None,
    bits: int = choices.DKIM_DEFAULT_BITS,
) -> DkimKey:
    """The domain's first DKIM key (or a new one after all were removed)."""
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(domain, actor)
    bits = _dkim_bits(bits)
    domain = _locked_domain(domain)
    if DkimKey.objects.filter(domain=domain, state=choices.DKIM_ACTIVE).exists():
        raise ValidationError(
            {"selector": _("This domain already has an active key; rotate it instead.")}
        )
    key = _new_key(domain, selector, bits)
    _record("mail.dkim.create", key, after=auditing.snapshot(key))
    _announce(key, [domain.pk], "dkim")
    recheck_in_scope(key, actor)
    return key


@action
def rotate_dkim_key(
    *, actor: Any, domain: Domain, selector: str | None = None, bits: int | None = None
) -> DkimKey:
    """A new active key under a new selector; the previous one is retired, not deleted, so
    its DNS record can stay published until mail signed with it has been delivered."""
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(domain, actor)
    domain = _locked_domain(domain)
    current = DkimKey.objects.filter(domain=domain, state=choices.DKIM_ACTIVE).first()
    bits = _dkim_bits(bits if bits is not None else (current.bits if current else 2048))
    if selector is None and current is not None and current.selector == dkim.default_selector():
        selector = f"{dkim.default_selector()}{timezone.now():%d%H%M}"
    if current is not None:
        current.state = choices.DKIM_RETIRED
        current.retired_at = timezone.now()
        current.save(update_fields=["state", "retired_at"])
        _record(
            "mail.dkim.retire",
            current,
            before={"state": choices.DKIM_ACTIVE},
            after={"state": choices.DKIM_RETIRED},
        )
    key = _new_key(domain, selector, bits)
    _record("mail.dkim.rotate", key, after=auditing.snapshot(key))
    _announce(key, [domain.pk], "dkim")
    recheck_in_scope(key, actor)
    return key


@action
def delete_dkim_key(*, actor: Any, key: DkimKey) -> None:
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(key, actor)
    snapshot = auditing.snapshot(key)
    customer, pk, path, domain_id = key.customer, key.pk, key.customer_path, key.domain_id
    key.delete()
    auditing.record(
        "mail.dkim.delete",
        object_type="mail.dkimkey",
        object_id=pk,
        object_repr=snapshot["selector"],
        customer=customer,
        before=snapshot,
    )
    announce(path, [domain_id], kind="dkim")


DKIM_DNS_JOB = "mail.dkim_dns_check"


@action
def check_dkim_dns(*, actor: Any, domain: Domain) -> Any:
    """Queue a DNS check of every DKIM key of ``domain`` (see :mod:`mail.dkim_dns`)."""
    from ums import jobs

    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(domain, actor)
    return jobs.enqueue(
        DKIM_DNS_JOB,
        actor=actor,
        title=_("DKIM DNS check of %(domain)s") % {"domain": domain.name},
        customer=domain.customer,
        params={"domain_id": domain.pk},
        target=domain,
    )


@action
def record_dkim_dns(*, actor: Any, key: DkimKey, status: str, detail: str) -> bool:
    """Store a DNS check result; a changed status is audited and converges the domain's
    SMTP nodes (it may move signing to a rotated-in key). True when it changed."""
    key = DkimKey.objects.select_for_update().get(pk=key.pk)
    changed = key.dns_status != status
    before = {"dns_status": key.dns_status}
    key.dns_status, key.dns_detail, key.dns_checked_at = status, detail[:300], timezone.now()
    key.save(update_fields=["dns_status", "dns_detail", "dns_checked_at"])
    if changed:
        _record("mail.dkim.dns", key, before=before, after={"dns_status": status})
        _announce(key, [key.domain_id], "dkim")
    return changed


# ----------------------------------------------------------------------------- policies

_EXTENSION = re.compile(r"^[a-z0-9]{1,16}$")
_MIME = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/(?:\*|[a-z0-9][a-z0-9!#$&^_.+-]{0,126})$")
POLICY_CHANGES = {"protocol_access", *choices.FILTER_FIELDS}


def _string_list(value: Any, field: str, clean: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) > choices.MAX_LIST_ENTRIES:
        raise ValidationError(
            {
                field: _("Enter a list of at most %(max)d entries.")
                % {"max": choices.MAX_LIST_ENTRIES}
            }
        )
    out: dict[str, None] = {}
    for item in value:
        try:
            out[clean(item)] = None
        except ValidationError as exc:
            shown = item if isinstance(item, str) else repr(item)
            raise ValidationError(
                {
                    field: _("“%(value)s”: %(error)s")
                    % {"value": shown[:60], "error": exc.messages[0]}
                }
            ) from exc
    return list(out)


def _extension(item: Any) -> str:
    if not isinstance(item, str):
        raise ValidationError(_("Enter text."))
    value = item.strip().lower().lstrip(".")
    if not _EXTENSION.match(value):
        raise ValidationError(_("An extension has 1 to 16 letters or digits, like “exe”."))
    return value


def _mime_type(item: Any) -> str:
    if not isinstance(item, str):
        raise ValidationError(_("Enter text."))
    value = item.strip().lower()
    if not _MIME.match(value):
        raise ValidationError(_("Enter a MIME type like “application/x-msdownload”."))
    return value


def _score(value: Any, field: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValidationError({field: _("Enter a number.")})
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise ValidationError({field: _("Enter a number.")}) from exc
    if not number.is_finite() or not Decimal("0") <= number <= Decimal("100"):
        raise ValidationError({field: _("Enter a score from 0 to 100.")})
    return number.quantize(Decimal("0.1"))


def _clean_policy(changes: dict[str, Any], current: Any) -> dict[str, Any]:
    _unknown(changes, POLICY_CHANGES)
    cleaned: dict[str, Any] = {}
    if "protocol_access" in changes:
        cleaned["protocol_access"] = _protocol_access(
            changes["protocol_access"] or {}, current.protocol_access
        )
    lists = {
        "blocked_extensions": _extension,
        "blocked_mime_types": _mime_type,
        "sender_allow": validators.normalise_sender_entry,
        "sender_block": validators.normalise_sender_entry,
    }
    for field, clean in lists.items():
        if field in changes:
            cleaned[field] = _string_list(changes[field], field, clean)
    for field in ("spam_tag_score", "spam_hold_score", "spam_reject_score"):
        if field in changes:
            cleaned[field] = _score(changes[field], field)
    for field in ("antivirus", "greylisting"):
        if field in changes:
            value = changes[field]
            cleaned[field] = None if value is None else _bool(value, field)
    if "dmarc_failure" in changes:
        value = changes["dmarc_failure"]
        if value not in (None, *choices.DMARC_FAILURE_CODES):
            raise ValidationError(
                {
                    "dmarc_failure": _("Choose one of: %(choices)s.")
                    % {"choices": ", ".join(choices.DMARC_FAILURE_CODES)}
                }
            )
        cleaned["dmarc_failure"] = value
    return cleaned


def _check_scores(effective: dict[str, dict[str, Any]]) -> None:
    tag = Decimal(str(effective["spam_tag_score"]["value"]))
    hold = Decimal(str(effective["spam_hold_score"]["value"]))
    reject_value = effective["spam_reject_score"]["value"]
    # No reject score (the default) means spam is never refused, only held.
    reject = None if reject_value is None else Decimal(str(reject_value))
    if not tag <= hold or (reject is not None and not hold <= reject):
        raise ValidationError(
            {
                "spam_hold_score": _(
                    "Scores must rise from tag (%(tag)s) to hold (%(hold)s) to reject "
                    "(%(reject)s), counting inherited values."
                )
                % {"tag": tag, "hold": hold, "reject": _("off") if reject is None else reject}
            }
        )


@action
def update_customer_policy(*, actor: Any, customer: Customer, **changes: Any) -> CustomerPolicy:
    """Set a customer's protocol defaults and filtering policy; ``None`` inherits."""
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(customer, actor)
    customer = Customer.objects.select_for_update().get(pk=customer.pk)
    row = CustomerPolicy.objects.filter(pk=customer.pk).first() or CustomerPolicy(
        customer=customer, customer_path=customer.path
    )
    before = auditing.snapshot(row) if row.updated_at else {}
    for key, value in _clean_policy(changes, row).items():
        setattr(row, key, value)
    row.customer_path = customer.path
    row.save()
    _check_scores(policy.effective_filtering(customer=customer))
    old, new = auditing.diff(before, auditing.snapshot(row))
    if new:
        auditing.record(
            "mail.customer_policy.update", obj=row, customer=customer, before=old, after=new
        )
        announce(customer.path, [], kind="customer_policy")
    recheck_in_scope(row, actor)
    return row


@action
def update_domain_policy(*, actor: Any, domain: Domain, **changes: Any) -> DomainPolicy:
    """Override the inherited protocol access and filtering policy for one domain."""
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(domain, actor)
    domain = _locked_domain(domain)
    row = DomainPolicy.objects.filter(pk=domain.pk).first() or DomainPolicy(
        domain=domain, customer=domain.customer, customer_path=domain.customer_path
    )
    before = auditing.snapshot(row) if row.updated_at else {}
    for key, value in _clean_policy(changes, row).items():
        setattr(row, key, value)
    row.save()
    _check_scores(policy.effective_filtering(customer=domain.customer, domain=domain))
    old, new = auditing.diff(before, auditing.snapshot(row))
    if new:
        auditing.record(
            "mail.domain_policy.update", obj=row, customer=domain.customer, before=old, after=new
        )
        _announce(domain, [domain.pk], "domain_policy")
    recheck_in_scope(row, actor)
    return row


@action
def reset_policy(*, actor: Any, row: CustomerPolicy | DomainPolicy) -> None:
    """Forget a level's own settings: everything inherits again."""
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(row, actor)
    if row.pk is None or not type(row).objects.filter(pk=row.pk).exists():
        return
    snapshot = auditing.snapshot(row)
    is_domain = isinstance(row, DomainPolicy)
    customer = Customer.objects.get(pk=row.customer_id)
    pk, path = row.pk, row.customer_path
    row.delete()
    auditing.record(
        "mail.domain_policy.reset" if is_domain else "mail.customer_policy.reset",
        object_type=row._meta.label_lower,
        object_id=pk,
        object_repr=str(row),
        customer=customer,
        before=snapshot,
    )
    announce(path, [pk] if is_domain else [], kind="policy")


# ---------------------------------------------------------------------------- mailboxes

MAILBOX_CHANGES = {
    "display_name",
    "quota_mb",
    "is_enabled",
    "read_only",
    "can_delete",
    "can_send",
    "retention_days",
    "forward_to",
    "forward_keep_copy",
    "protocol_access",
    "hide_from_address_book",
}


def clean_mailbox_fields(
    fields: dict[str, Any], *, email: str, current_access: dict[str, str] | None = None
) -> dict[str, Any]:
    """Validate the editable mailbox fields (shared by create, update and the CSV import).

    Every bad field is reported, not only the first.
    """
    _unknown(fields, MAILBOX_CHANGES)
    cleaned: dict[str, Any] = {}
    errors = FieldErrors()
    if "display_name" in fields:
        with errors.check():
            cleaned["display_name"] = _text(fields["display_name"] or "", "display_name", 150)
    if "quota_mb" in fields:
        with errors.check():
            cleaned["quota_mb"] = _quota(fields["quota_mb"])
    for flag in (
        "is_enabled",
        "read_only",
        "can_delete",
        "can_send",
        "forward_keep_copy",
        "hide_from_address_book",
    ):
        if flag in fields:
            with errors.check():
                cleaned[flag] = _bool(fields[flag], flag)
    if "retention_days" in fields:
        with errors.check():
            cleaned["retention_days"] = _int(
                fields["retention_days"], "retention_days", 1, choices.MAX_RETENTION_DAYS
            )
    if "forward_to" in fields:
        with errors.check():
            targets = _address_list(fields["forward_to"] or [], "forward_to", choices.MAX_FORWARDS)
            if email in targets:
                raise ValidationError({"forward_to": _("A mailbox cannot forward to itself.")})
            cleaned["forward_to"] = targets
    if "protocol_access" in fields:
        with errors.check():
            cleaned["protocol_access"] = _protocol_access(
                fields["protocol_access"] or {}, current_access
            )
    errors.raise_any()
    return cleaned


@action
def create_mailbox(
    *, actor: Any, domain: Domain, local_part: str, password: str, **fields: Any
) -> Mailbox:
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(domain, actor)
    errors = FieldErrors()
    local, cleaned = "", {}
    with errors.check():
        local = _field("local_part", validators.normalise_local_part, local_part)
    email = f"{local}@{domain.name}"
    with errors.check():
        cleaned = clean_mailbox_fields(fields, email=email)
    with errors.check():
        _field("password", passwords.check_password, password, local_part=local, domain=domain.name)
    if local and errors.errors:
        # Only on the way to a refusal: a clean request meets the check under the lock below.
        with errors.check():
            check_address_free(domain, local)
    errors.raise_any()
    # Hash before taking the locks: other creates in the domain need not wait for it.
    password_hash = passwords.make_hash(password)
    domain = _locked_domain(domain)
    check_address_free(domain, local)
    if cleaned.get("forward_to") and cleaned.get("forward_keep_copy") is False:
        forwarding.refuse_loop(email, cleaned["forward_to"], "forward_to")
    quota = cleaned.pop("quota_mb", domain.default_quota_mb)
    mailbox = Mailbox(
        customer=domain.customer,
        customer_path=domain.customer_path,
        domain=domain,
        local_part=local,
        email=email,
        quota_mb=quota,
        password_hash=password_hash,
        password_changed_at=timezone.now(),
        **cleaned,
    )
    try:
        # No savepoint: the domain row is locked, a clash here can only fail the action.
        mailbox.save()
    except IntegrityError as exc:
        raise ValidationError(
            {"local_part": _("A mailbox with this address already exists.")}
        ) from exc
    _record("mail.mailbox.create", mailbox, after=auditing.snapshot(mailbox))
    announce(mailbox.customer_path, [domain.pk], kind="mailbox", new_mailbox_ids=[mailbox.pk])
    recheck_in_scope(mailbox, actor)
    # Last: a create takes its units from its customer's escrow (mail.limits); when that
    # runs dry, the refill locks an ancestor's limit row (shared by every create below
    # it) for one statement committed apart. A refusal here rolls the whole create back.
    limits.reserve(domain.customer, actor=actor, mailboxes=1, quota_mb=quota)
    return mailbox


@action
def update_mailbox(*, actor: Any, mailbox: Mailbox, **changes: Any) -> Mailbox:
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(mailbox, actor)
    mailbox = Mailbox.objects.select_for_update().select_related("customer").get(pk=mailbox.pk)
    cleaned = clean_mailbox_fields(
        changes, email=mailbox.email, current_access=mailbox.protocol_access
    )
    before = auditing.snapshot(mailbox)
    if "quota_mb" in cleaned and cleaned["quota_mb"] != mailbox.quota_mb:
        limits.reserve(
            mailbox.customer, actor=actor, quota_mb=cleaned["quota_mb"] - mailbox.quota_mb
        )
    for key, value in cleaned.items():
        setattr(mailbox, key, value)
    passes_on = mailbox.forward_to and not mailbox.forward_keep_copy and mailbox.is_enabled
    if passes_on and {"forward_to", "forward_keep_copy", "is_enabled"} & cleaned.keys():
        forwarding.refuse_loop(mailbox.email, list(mailbox.forward_to), "forward_to")
    mailbox.save()
    old, new = auditing.diff(before, auditing.snapshot(mailbox))
    if new:
        _record("mail.mailbox.update", mailbox, before=old, after=new)
        _announce(mailbox, [mailbox.domain_id], "mailbox")
    recheck_in_scope(mailbox, actor)
    return mailbox


@action
def set_mailbox_password(*, actor: Any, mailbox: Mailbox, password: str) -> None:
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(mailbox, actor)
    mailbox = Mailbox.objects.select_for_update().select_related("domain").get(pk=mailbox.pk)
    _field(
        "password",
        passwords.check_password,
        password,
        local_part=mailbox.local_part,
        domain=mailbox.domain.name,
        current_hash=mailbox.password_hash,
    )
    mailbox.password_hash = passwords.make_hash(password)
    mailbox.password_changed_at = timezone.now()
    mailbox.save(update_fields=["password_hash", "password_changed_at", "updated_at"])
    # An imported password still waiting for its hash loses to this one (the activation
    # job only stores hashes of rows still pending, under the same mailbox lock).
    PendingPassword.objects.filter(mailbox_id=mailbox.pk).delete()
    auditing.record("mail.mailbox.password", obj=mailbox, customer=mailbox.customer)
    _announce(mailbox, [mailbox.domain_id], "mailbox")


@action
def delete_mailbox(*, actor: Any, mailbox: Mailbox) -> None:
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(mailbox, actor)
    _require_reserved_removal(actor, mailbox.local_part)
    mailbox = Mailbox.objects.select_for_update().select_related("customer").get(pk=mailbox.pk)
    snapshot = auditing.snapshot(mailbox)
    customer, pk, path, domain_id = (
        mailbox.customer,
        mailbox.pk,
        mailbox.customer_path,
        mailbox.domain_id,
    )
    quota = mailbox.quota_mb
    mailbox.delete()
    limits.add(customer, mailboxes=-1, quota_mb=-quota)
    auditing.record(
        "mail.mailbox.delete",
        object_type="mail.mailbox",
        object_id=pk,
        object_repr=snapshot["email"],
        customer=customer,
        before=snapshot,
    )
    announce(path, [domain_id], kind="mailbox")


MAX_BULK = 500


def _bulk(objects: Iterable[Mailbox]) -> list[Mailbox]:
    mailboxes = list(objects)
    if len(mailboxes) > MAX_BULK:
        raise ValidationError(_("At most %(max)d mailboxes at once.") % {"max": MAX_BULK})
    return mailboxes


@action
def set_mailboxes_enabled(*, actor: Any, objects: Iterable[Mailbox], enabled: bool) -> int:
    """Enable or disable several mailboxes: all or none, each audited as its own update.

    Returns how many changed (those already in that state are left alone and not audited).
    """
    changed = 0
    for mailbox in _bulk(objects):
        before = mailbox.is_enabled
        # update_mailbox checks permission and scope per mailbox, inside this transaction.
        after = update_mailbox(actor=actor, mailbox=mailbox, is_enabled=_bool(enabled, "enabled"))
        changed += before != after.is_enabled
    return changed


def enable_mailboxes(*, actor: Any, objects: Iterable[Mailbox]) -> int:
    return set_mailboxes_enabled(actor=actor, objects=objects, enabled=True)


def disable_mailboxes(*, actor: Any, objects: Iterable[Mailbox]) -> int:
    return set_mailboxes_enabled(actor=actor, objects=objects, enabled=False)


@action
def delete_mailboxes(*, actor: Any, objects: Iterable[Mailbox]) -> int:
    """Delete several mailboxes in one transaction: any refusal and none is deleted."""
    mailboxes = _bulk(objects)
    for mailbox in mailboxes:
        delete_mailbox(actor=actor, mailbox=mailbox)
    return len(mailboxes)


def record_used_space(usage: dict[int, int]) -> int:
    """Store the used bytes nodes report per mailbox id (measurements, not audited).

    One UPDATE for the whole batch (``usage.collect`` reports a node's mailboxes at once);
    only rows whose value changed are written, so ``used_updated_at`` is when it last changed
    and a steady mail store costs reads, not a million row versions.
    """
    if not usage:
        return 0
    ids = list(usage)
    used = [max(int(usage[pk]), 0) for pk in ids]
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE mail_mailbox AS m SET used_bytes = v.used, used_updated_at = %s "
            "FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, used) "
            "WHERE m.id = v.id AND m.used_bytes IS DISTINCT FROM v.used",
            [timezone.now(), ids, used],
        )
        return cursor.rowcount


# ------------------------------------------------------------------------------ aliases

ALIAS_CHANGES = {"kind", "name", "targets", "is_enabled", "hide_from_address_book"}


def clean_alias_fields(fields: dict[str, Any], *, email: str) -> dict[str, Any]:
    _unknown(fields, ALIAS_CHANGES)
    cleaned: dict[str, Any] = {}
    errors = FieldErrors()
    if "kind" in fields:
        if fields["kind"] in (choices.ALIAS, choices.GROUP):
            cleaned["kind"] = fields["kind"]
        else:
            errors.add(ValidationError({"kind": _("Choose alias or group.")}))
    if "name" in fields:
        with errors.check():
            cleaned["name"] = _text(fields["name"] or "", "name", 150)
    if "targets" in fields:
        with errors.check():
            targets = _address_list(
                fields["targets"], "targets", choices.MAX_ALIAS_TARGETS, allow_empty=False
            )
            if email in targets:
                raise ValidationError({"targets": _("An alias cannot deliver to itself.")})
            cleaned["targets"] = targets
    for flag in ("is_enabled", "hide_from_address_book"):
        if flag in fields:
            with errors.check():
                cleaned[flag] = _bool(fields[flag], flag)
    errors.raise_any()
    return cleaned


@action
def create_alias(
    *, actor: Any, domain: Domain, local_part: str, targets: list[str], **fields: Any
) -> Alias:
    """An alias (or, with ``kind="group"``, a distribution group) delivering to ``targets``."""
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(domain, actor)
    errors = FieldErrors()
    local, cleaned = "", {}
    with errors.check():
        local = _field("local_part", validators.normalise_local_part, local_part)
    email = f"{local}@{domain.name}"
    fields.setdefault("kind", choices.ALIAS)
    with errors.check():
        cleaned = clean_alias_fields({**fields, "targets": targets}, email=email)
    if local and errors.errors:
        # Only on the way to a refusal: a clean request meets the check under the lock below.
        with errors.check():
            check_address_free(domain, local)
    errors.raise_any()
    domain = _locked_domain(domain)
    check_address_free(domain, local)
    if cleaned.get("is_enabled", True):
        forwarding.refuse_loop(email, cleaned["targets"], "targets")
    alias = Alias(
        customer=domain.customer,
        customer_path=domain.customer_path,
        domain=domain,
        local_part=local,
        email=email,
        **cleaned,
    )
    try:
        alias.save()
    except IntegrityError as exc:
        raise ValidationError(
            {"local_part": _("This address is already an alias or group.")}
        ) from exc
    _record("mail.alias.create", alias, after=auditing.snapshot(alias))
    _announce(alias, [domain.pk], "alias")
    recheck_in_scope(alias, actor)
    limits.reserve(domain.customer, actor=actor, aliases=1)  # last: see create_mailbox
    return alias


@action
def update_alias(*, actor: Any, alias: Alias, **changes: Any) -> Alias:
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(alias, actor)
    alias = Alias.objects.select_for_update().select_related("customer").get(pk=alias.pk)
    cleaned = clean_alias_fields(changes, email=alias.email)
    if cleaned.get("is_enabled") is False:
        _require_reserved_removal(actor, alias.local_part, alias.is_system)
    before = auditing.snapshot(alias)
    for key, value in cleaned.items():
        setattr(alias, key, value)
    if alias.is_enabled and {"targets", "is_enabled"} & cleaned.keys():
        forwarding.refuse_loop(alias.email, list(alias.targets), "targets")
    alias.save()
    old, new = auditing.diff(before, auditing.snapshot(alias))
    if new:
        _record("mail.alias.update", alias, before=old, after=new)
        _announce(alias, [alias.domain_id], "alias")
    recheck_in_scope(alias, actor)
    return alias


@action
def delete_alias(*, actor: Any, alias: Alias) -> None:
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(alias, actor)
    _require_reserved_removal(actor, alias.local_part, alias.is_system)
    alias = Alias.objects.select_for_update().select_related("customer").get(pk=alias.pk)
    snapshot = auditing.snapshot(alias)
    customer, pk, path, domain_id = alias.customer, alias.pk, alias.customer_path, alias.domain_id
    counted = not alias.is_system
    alias.delete()
    if counted:
        limits.add(customer, aliases=-1)
    auditing.record(
        "mail.alias.delete",
        object_type="mail.alias",
        object_id=pk,
        object_repr=snapshot["email"],
        customer=customer,
        before=snapshot,
    )
    announce(path, [domain_id], kind="alias")


# ------------------------------------------------------------------------ auto-responder

AUTORESPONDER_FIELDS = {"is_enabled", "subject", "body", "start_date", "end_date", "interval_days"}


def _date(value: Any, field: str) -> datetime.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str):
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            pass
    raise ValidationError({field: _("Enter a date as YYYY-MM-DD.")})


@action
def set_autoresponder(*, actor: Any, mailbox: Mailbox, **fields: Any) -> AutoResponder:
    """Create or change a mailbox's auto-responder."""
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(mailbox, actor)
    _unknown(fields, AUTORESPONDER_FIELDS)
    mailbox = Mailbox.objects.select_for_update().select_related("customer").get(pk=mailbox.pk)
    row = AutoResponder.objects.filter(pk=mailbox.pk).first()
    created = row is None
    if row is None:
        row = AutoResponder(
            mailbox=mailbox, customer=mailbox.customer, customer_path=mailbox.customer_path
        )
    before = {} if created else auditing.snapshot(row)
    if "is_enabled" in fields:
        row.is_enabled = _bool(fields["is_enabled"], "is_enabled")
    if "subject" in fields:
        row.subject = _text(fields["subject"] or "", "subject", 200)
    if "body" in fields:
        row.body = _text(fields["body"] or "", "body", 10000, multiline=True)
    if "start_date" in fields:
        row.start_date = _date(fields["start_date"], "start_date")
    if "end_date" in fields:
        row.end_date = _date(fields["end_date"], "end_date")
    if "interval_days" in fields:
        row.interval_days = _int(fields["interval_days"], "interval_days", 1, 365)
    if row.is_enabled and not row.subject:
        raise ValidationError({"subject": _("Enter the subject of the reply.")})
    if row.is_enabled and not row.body.strip():
        raise ValidationError({"body": _("Enter the text of the reply.")})
    if row.start_date and row.end_date and row.end_date < row.start_date:
        raise ValidationError({"end_date": _("The end date is before the start date.")})
    sieve.validate_script(autoresponder_script(row, mailbox.email), field="body")
    row.save()
    after = auditing.snapshot(row)
    old, new = auditing.diff(before, after) if not created else ({}, after)
    if new:
        _record(
            "mail.autoresponder.update" if not created else "mail.autoresponder.create",
            row,
            before=old,
            after=new,
        )
        _announce(row, [mailbox.domain_id], "autoresponder")
    recheck_in_scope(row, actor)
    return row


def autoresponder_script(row: AutoResponder, address: str) -> str:
    return sieve.render_vacation(
        subject=row.subject or "",
        body=row.body or "",
        days=row.interval_days,
        address=address,
        start=row.start_date,
        end=row.end_date,
    )


@action
def delete_autoresponder(*, actor: Any, autoresponder: AutoResponder) -> None:
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(autoresponder, actor)
    snapshot = auditing.snapshot(autoresponder)
    customer = Customer.objects.get(pk=autoresponder.customer_id)
    pk, path = autoresponder.pk, autoresponder.customer_path
    domain_id = Mailbox.objects.filter(pk=pk).values_list("domain_id", flat=True).first()
    autoresponder.delete()
    auditing.record(
        "mail.autoresponder.delete",
        object_type="mail.autoresponder",
        object_id=pk,
        object_repr=snapshot["subject"],
        customer=customer,
        before=snapshot,
    )
    announce(path, [domain_id] if domain_id else [], kind="autoresponder")


# -------------------------------------------------------------------------------- Sieve

SIEVE_CHANGES = {"name", "mode", "rules", "script", "is_active"}


def _apply_sieve(row: SieveScript, fields: dict[str, Any]) -> None:
    _unknown(fields, SIEVE_CHANGES)
    if "name" in fields:
        row.name = _text(fields["name"] or "", "name", 100)
        if not row.name:
            raise ValidationError({"name": _("Enter a name.")})
    if "mode" in fields:
        if fields["mode"] not in (choices.SIEVE_RULES, choices.SIEVE_RAW):
            raise ValidationError({"mode": _("Choose rules or raw.")})
        row.mode = fields["mode"]
    if "is_active" in fields:
        row.is_active = _bool(fields["is_active"], "is_active")
    if row.mode == choices.SIEVE_RULES:
        if "script" in fields and "rules" not in fields:
            raise ValidationError(
                {"script": _("A rule-editor filter is edited through its rules; switch to raw.")}
            )
        if "rules" in fields or not row.script:
            row.rules = sieve.clean_rules(fields.get("rules", row.rules or []))
        row.script = sieve.render_rules(row.rules)
        sieve.validate_script(row.script, field="rules")
    else:
        if "script" in fields:
            row.script = sieve.validate_script(fields["script"])
        elif not row.script:
            raise ValidationError({"script": _("Enter a Sieve script.")})
        else:
            sieve.validate_script(row.script)
        row.rules = []


def _activate_only(row: SieveScript) -> None:
    if row.is_active:
        SieveScript.objects.filter(mailbox_id=row.mailbox_id, is_active=True).exclude(
            pk=row.pk
        ).update(is_active=False)


@action
def create_sieve_script(
    *, actor: Any, mailbox: Mailbox, name: str, mode: str = choices.SIEVE_RULES, **fields: Any
) -> SieveScript:
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(mailbox, actor)
    mailbox = Mailbox.objects.select_for_update().select_related("customer").get(pk=mailbox.pk)
    row = SieveScript(
        customer=mailbox.customer,
        customer_path=mailbox.customer_path,
        mailbox=mailbox,
        mode=choices.SIEVE_RULES,
        is_active=True,
    )
    _apply_sieve(row, {"name": name, "mode": mode, **fields})
    if SieveScript.objects.filter(mailbox=mailbox, name=row.name).exists():
        raise ValidationError({"name": _("This mailbox already has a filter with this name.")})
    if row.is_active:
        SieveScript.objects.filter(mailbox=mailbox, is_active=True).update(is_active=False)
    row.save()
    _record("mail.sieve.create", row, after=auditing.snapshot(row))
    _announce(row, [mailbox.domain_id], "sieve")
    recheck_in_scope(row, actor)
    return row


@action
def update_sieve_script(*, actor: Any, sieve_script: SieveScript, **changes: Any) -> SieveScript:
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(sieve_script, actor)
    mailbox = Mailbox.objects.select_for_update().get(pk=sieve_script.mailbox_id)
    row = SieveScript.objects.select_for_update().select_related("customer").get(pk=sieve_script.pk)
    before = auditing.snapshot(row)
    _apply_sieve(row, changes)
    if (
        "name" in changes
        and SieveScript.objects.filter(mailbox_id=row.mailbox_id, name=row.name)
        .exclude(pk=row.pk)
        .exists()
    ):
        raise ValidationError({"name": _("This mailbox already has a filter with this name.")})
    _activate_only(row)
    row.save()
    old, new = auditing.diff(before, auditing.snapshot(row))
    if new:
        _record("mail.sieve.update", row, before=old, after=new)
        _announce(row, [mailbox.domain_id], "sieve")
    recheck_in_scope(row, actor)
    return row


@action
def set_sieve_script_active(
    *, actor: Any, sieve_script: SieveScript, active: bool = True
) -> SieveScript:
    """Make this the mailbox's one active filter (the previous one is switched off), or
    switch it off. One audit row names both scripts; the node gets only the active one."""
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(sieve_script, actor)
    # The mailbox row lock orders concurrent switches: the last one wins, none fails.
    mailbox = Mailbox.objects.select_for_update().get(pk=sieve_script.mailbox_id)
    row = SieveScript.objects.select_for_update().select_related("customer").get(pk=sieve_script.pk)
    active = _bool(active, "active")
    previous = list(
        SieveScript.objects.filter(mailbox_id=row.mailbox_id, is_active=True)
        .exclude(pk=row.pk)
        .values_list("name", flat=True)
    )
    if row.is_active == active and not (active and previous):
        return row
    row.is_active = active
    _activate_only(row)
    row.save(update_fields=["is_active", "updated_at"])
    _record(
        "mail.sieve.activate" if active else "mail.sieve.deactivate",
        row,
        before={"active": previous if active else [row.name]},
        after={"active": [row.name] if active else []},
    )
    _announce(row, [mailbox.domain_id], "sieve")
    recheck_in_scope(row, actor)
    return row


@action
def delete_sieve_script(*, actor: Any, sieve_script: SieveScript) -> None:
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(sieve_script, actor)
    snapshot = auditing.snapshot(sieve_script)
    customer = Customer.objects.get(pk=sieve_script.customer_id)
    pk, path = sieve_script.pk, sieve_script.customer_path
    domain_id = (
        Mailbox.objects.filter(pk=sieve_script.mailbox_id)
        .values_list("domain_id", flat=True)
        .first()
    )
    sieve_script.delete()
    auditing.record(
        "mail.sieve.delete",
        object_type="mail.sievescript",
        object_id=pk,
        object_repr=snapshot["name"],
        customer=customer,
        before=snapshot,
    )
    announce(path, [domain_id] if domain_id else [], kind="sieve")
