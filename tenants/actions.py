"""Every state change of customers, administrators and tokens.

Each function takes a keyword-only ``actor``, runs in one transaction, writes its audit
record in that transaction and re-checks scope before committing. Portal, API, management
commands and tasks all call these; none of them writes the models directly.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.apps import apps
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import F, Value
from django.db.models.functions import Concat, Substr
from django.utils import timezone
from django.utils.translation import gettext as _

from licensing import enforce as licence
from ums import auditing
from ums.actions import action, recheck_in_scope, require_in_scope, require_permission

from . import limits, tokens
from . import permissions as perms
from .models import Administrator, ApiToken, Customer
from .twofactor import policy

# --------------------------------------------------------------------------- customers


def _check_sibling_name(name: str, parent: Customer | None, exclude_pk: int | None = None) -> None:
    siblings = Customer.objects.filter(parent=parent, name__iexact=name)
    if exclude_pk is not None:
        siblings = siblings.exclude(pk=exclude_pk)
    if siblings.exists():
        raise ValidationError(
            {"name": _("A customer with this name already exists at this level.")}
        )


def _full_clean(obj: models.Model, exclude: list[str] | None = None) -> None:
    obj.full_clean(exclude=exclude, validate_unique=False, validate_constraints=False)


def _save_unique(obj: models.Model, field: str, message: str) -> None:
    """Save; a unique constraint lost to a concurrent writer becomes a field error."""
    try:
        with transaction.atomic():
            obj.save()
    except IntegrityError as exc:
        raise ValidationError({field: message}) from exc


@action
def create_customer(*, actor: Any, name: str, parent: Customer | None, notes: str = "") -> Customer:
    if actor is not None:
        require_permission(actor, perms.CUSTOMERS_MANAGE)
        if parent is None:
            raise ValidationError({"parent": _("Choose the customer this one belongs to.")})
        require_in_scope(parent, actor)
    if parent is not None:  # top-level customers are the licensee's own
        licence.check(organisations=1)
    customer = Customer(name=name, parent=parent, notes=notes, path="/pending/")
    _full_clean(customer, exclude=["path"])
    _check_sibling_name(name, parent)
    _save_unique(customer, "name", _("A customer with this name already exists at this level."))
    customer.path = f"{parent.path if parent else '/'}{customer.pk}/"
    customer.depth = parent.depth + 1 if parent else 0
    customer.save(update_fields=["path", "depth"])
    auditing.record("customer.create", obj=customer, after=auditing.snapshot(customer))
    recheck_in_scope(customer, actor)
    return customer


@action
def update_customer(*, actor: Any, customer: Customer, **changes: Any) -> Customer:
    """Rename a customer or change its notes; moving and disabling have their own actions."""
    require_permission(actor, perms.CUSTOMERS_MANAGE)
    require_in_scope(customer, actor)
    allowed = {"name", "notes"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValidationError({k: _("This field cannot be changed here.") for k in unknown})
    customer = Customer.objects.select_for_update().get(pk=customer.pk)
    before = auditing.snapshot(customer)
    for key, value in changes.items():
        setattr(customer, key, value)
    _full_clean(customer, exclude=["path"])
    if "name" in changes:
        _check_sibling_name(customer.name, customer.parent, exclude_pk=customer.pk)
    _save_unique(customer, "name", _("A customer with this name already exists at this level."))
    old, new = auditing.diff(before, auditing.snapshot(customer))
    if new:
        auditing.record("customer.update", obj=customer, before=old, after=new)
    recheck_in_scope(customer, actor)
    return customer


def _customer_path_models() -> list[type[models.Model]]:
    """Every model that keeps a denormalised ``customer_path`` beside its customer."""
    found = []
    for model in apps.get_models():
        names = {f.name for f in model._meta.get_fields()}
        if "customer_path" in names and model is not Customer:
            found.append(model)
    return found


@action
def move_customer(*, actor: Any, customer: Customer, new_parent: Customer) -> Customer:
    """Move a subtree under ``new_parent``; never under itself or one of its descendants."""
    require_permission(actor, perms.CUSTOMERS_MANAGE)
    require_in_scope(customer, actor)
    require_in_scope(new_parent, actor)
    customer = Customer.objects.select_for_update().get(pk=customer.pk)
    new_parent = Customer.objects.get(pk=new_parent.pk)
    if customer.parent_id is None:
        raise ValidationError({"parent": _("A top-level customer cannot be moved.")})
    if new_parent.path.startswith(customer.path):
        raise ValidationError(
            {"parent": _("A customer cannot be moved under itself or one of its descendants.")}
        )
    if actor is not None and customer.path == actor.customer_path:
        raise ValidationError({"parent": _("You cannot move your own home customer.")})
    if new_parent.pk == customer.parent_id:
        return customer
    _check_sibling_name(customer.name, new_parent, exclude_pk=customer.pk)
    # Mail already allocated in the subtree must fit the limits of its new ancestors.
    exceeded = limits.limit_exceeded_by_move(customer, new_parent, actor)
    if exceeded:
        raise ValidationError({"parent": exceeded})
    old_path = customer.path
    new_path = f"{new_parent.path}{customer.pk}/"
    depth_delta = new_parent.depth + 1 - customer.depth
    old_parent_id = customer.parent_id
    Customer.objects.filter(pk=customer.pk).update(parent=new_parent)
    # One UPDATE per table rewrites every path of the subtree; no row-by-row walk.
    tail = Substr(F("path"), len(old_path) + 1)
    Customer.objects.filter(path__startswith=old_path).update(
        path=Concat(Value(new_path), tail, output_field=models.CharField()),
        depth=F("depth") + depth_delta,
    )
    for model in _customer_path_models():
        if hasattr(model._default_manager, "move_scope"):
            # The audit log moves its records itself: the database allows it only so.
            model._default_manager.move_scope(old_path, new_path)
            continue
        tail = Substr(F("customer_path"), len(old_path) + 1)
        model._default_manager.filter(customer_path__startswith=old_path).update(
            customer_path=Concat(Value(new_path), tail, output_field=models.CharField())
        )
    customer.refresh_from_db()
    auditing.record(
        "customer.move",
        obj=customer,
        before={"parent": old_parent_id, "path": old_path},
        after={"parent": new_parent.pk, "path": new_path},
    )
    recheck_in_scope(customer, actor)
    return customer


@action
def set_customer_active(*, actor: Any, customer: Customer, active: bool) -> Customer:
    """Disable or enable a customer; disabling stops logins in its whole subtree."""
    require_permission(actor, perms.CUSTOMERS_MANAGE)
    require_in_scope(customer, actor)
    if actor is not None and not active and actor.customer_path.startswith(customer.path):
        raise ValidationError({"is_active": _("You cannot disable your own home customer.")})
    customer = Customer.objects.select_for_update().get(pk=customer.pk)
    if customer.is_active == active:
        return customer
    customer.is_active = active
    customer.save(update_fields=["is_active", "updated_at"])
    auditing.record(
        "customer.enable" if active else "customer.disable",
        obj=customer,
        before={"is_active": not active},
        after={"is_active": active},
    )
    return customer


@action
def delete_customer(*, actor: Any, customer: Customer) -> None:
    """Delete an empty customer: no sub-customers, administrators or services left."""
    require_permission(actor, perms.CUSTOMERS_MANAGE)
    require_in_scope(customer, actor)
    if actor is not None and actor.customer_path.startswith(customer.path):
        raise ValidationError({"customer": _("You cannot delete your own home customer.")})
    customer = Customer.objects.select_for_update().get(pk=customer.pk)
    snapshot = auditing.snapshot(customer)
    pk, path = customer.pk, customer.path
    try:
        with transaction.atomic():
            customer.delete()
    except models.ProtectedError as exc:
        kinds = sorted({str(o._meta.verbose_name_plural) for o in exc.protected_objects})
        raise ValidationError(
            {
                "customer": _("Only an empty customer can be deleted; it still has: %(kinds)s.")
                % {"kinds": ", ".join(kinds)}
            }
        ) from exc
    auditing.record(
        "customer.delete",
        object_type="tenants.customer",
        object_id=pk,
        object_repr=snapshot["name"],
        customer_path=path,
        before=snapshot,
    )


# ----------------------------------------------------------------------- administrators


def _check_grantable(actor: Any, codes: list[str]) -> list[str]:
    try:
        codes = perms.normalise(codes)
    except ValueError as exc:
        raise ValidationError({"permissions": str(exc)}) from exc
    if actor is not None:
        missing = set(codes) - actor.permission_set()
        if missing:
            raise ValidationError(
                {
                    "permissions": _("You cannot grant permissions you do not hold: %(codes)s.")
                    % {"codes": ", ".join(sorted(missing))}
                }
            )
    return codes


def require_manageable(actor: Any, target: Administrator) -> None:
    """An administrator manages others only within scope and never someone more powerful."""
    if actor is None:
        return
    require_in_scope(target, actor)
    if target.pk == actor.pk:
        return
    require_permission(actor, perms.ADMINISTRATORS_MANAGE)
    if not target.permission_set() <= actor.permission_set():
        raise PermissionDenied(
            _("This administrator holds permissions you do not have; you cannot change them.")
        )


def _validate_password(password: str, user: Administrator) -> None:
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise ValidationError({"password": exc.messages}) from exc


@action
def create_administrator(
    *,
    actor: Any,
    customer: Customer,
    username: str,
    full_name: str,
    email: str,
    password: str,
    permissions: list[str] | tuple[str, ...] = (),
    is_active: bool = True,
) -> Administrator:
    require_permission(actor, perms.ADMINISTRATORS_MANAGE)
    require_in_scope(customer, actor)
    codes = _check_grantable(actor, list(permissions))
    admin = Administrator(
        username=username,
        full_name=full_name,
        email=email,
        customer=customer,
        customer_path=customer.path,
        permissions=codes,
        is_active=is_active,
    )
    _full_clean(admin, exclude=["password", "customer_path"])
    if Administrator.objects.filter(username__iexact=username).exists():
        raise ValidationError({"username": _("This username is taken.")})
    _validate_password(password, admin)
    admin.set_password(password)
    _save_unique(admin, "username", _("This username is taken."))
    auditing.record("administrator.create", obj=admin, after=auditing.snapshot(admin))
    recheck_in_scope(admin, actor)
    return admin


@action
def update_administrator(*, actor: Any, admin: Administrator, **changes: Any) -> Administrator:
    allowed = {"full_name", "email", "customer", "permissions", "is_active", "language"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValidationError({k: _("This field cannot be changed here.") for k in unknown})
    require_manageable(actor, admin)
    admin = Administrator.objects.select_for_update().get(pk=admin.pk)
    is_self = actor is not None and admin.pk == actor.pk
    before = auditing.snapshot(admin)
    if "permissions" in changes:
        codes = _check_grantable(actor, list(changes.pop("permissions") or []))
        if is_self and not set(codes) <= admin.permission_set():
            raise ValidationError({"permissions": _("You cannot raise your own permissions.")})
        admin.permissions = codes
    if "customer" in changes:
        customer = changes.pop("customer")
        require_in_scope(customer, actor)
        admin.customer = customer
        admin.customer_path = customer.path
    if is_self and changes.get("is_active") is False:
        raise ValidationError({"is_active": _("You cannot disable your own account.")})
    for key, value in changes.items():
        setattr(admin, key, value)
    _full_clean(admin, exclude=["password", "customer_path"])
    admin.save()
    old, new = auditing.diff(before, auditing.snapshot(admin))
    if new:
        auditing.record("administrator.update", obj=admin, before=old, after=new)
    recheck_in_scope(admin, actor)
    return admin


@action
def set_administrator_password(*, actor: Any, admin: Administrator, password: str) -> None:
    require_manageable(actor, admin)
    admin = Administrator.objects.select_for_update().get(pk=admin.pk)
    _validate_password(password, admin)
    admin.set_password(password)
    admin.save(update_fields=["password"])
    auditing.record("administrator.password", obj=admin)


@action
def delete_administrator(*, actor: Any, admin: Administrator) -> None:
    require_manageable(actor, admin)
    if actor is not None and admin.pk == actor.pk:
        raise ValidationError({"administrator": _("You cannot delete your own account.")})
    snapshot = auditing.snapshot(admin)
    customer = admin.customer
    pk, name = admin.pk, str(admin)
    admin.delete()
    auditing.record(
        "administrator.delete",
        object_type="tenants.administrator",
        object_id=pk,
        object_repr=name,
        customer=customer,
        before=snapshot,
    )


# ------------------------------------------------------------------------------- tokens


@action
def create_token(
    *,
    actor: Administrator,
    name: str,
    read_only: bool = False,
    expires_at: datetime.datetime | None = None,
    second_factor: Any = None,
) -> tuple[ApiToken, str]:
    """Create a token for the actor; the full token is returned once and never stored.

    A token outlives the session that made it, so an administrator with a second factor
    must have passed it recently: ``second_factor`` is a
    :class:`~tenants.twofactor.session.FreshProof` from the session or from a code sent
    with the request.
    """
    require_permission(actor, perms.TOKENS_MANAGE)
    fresh = actor is not None and second_factor is not None and second_factor.holds_for(actor)
    if actor is not None and not fresh and policy.is_enrolled(actor):
        raise PermissionDenied(
            _(
                "Creating an API token needs a recent second factor: confirm with your "
                "authenticator app or security key first (over the API, send the app's "
                "current code as “otp”)."
            )
        )
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": _("The expiry must be in the future.")})
    prefix, secret, full = tokens.generate()
    token = ApiToken(
        owner=actor,
        customer_path=actor.customer_path,
        name=name,
        prefix=prefix,
        secret_hash=tokens.hash_secret(secret),
        read_only=read_only,
        expires_at=expires_at,
    )
    _full_clean(token, exclude=["customer_path", "prefix", "secret_hash"])
    token.save()
    auditing.record("token.create", obj=token, after=auditing.snapshot(token))
    return token, full


@action
def revoke_token(*, actor: Any, token: ApiToken) -> ApiToken:
    if actor is not None and token.owner_id != actor.pk:
        require_manageable(actor, token.owner)
    token = ApiToken.objects.select_for_update().get(pk=token.pk)
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        auditing.record("token.revoke", obj=token, after={"revoked_at": token.revoked_at})
    return token


def record_token_use(token: ApiToken, ip: str | None) -> None:
    """Note when and from where a token was used; written at most once a minute per token."""
    now = timezone.now()
    recent = token.last_used_at and now - token.last_used_at < datetime.timedelta(minutes=1)
    if recent and token.last_used_ip == ip:
        return
    with transaction.atomic():
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now, last_used_ip=ip)
        auditing.record("token.use", obj=token, actor=token.owner, extra={"ip": ip})
    token.last_used_at, token.last_used_ip = now, ip
