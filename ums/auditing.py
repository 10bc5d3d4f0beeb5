"""The one entry point through which every app records an audit event.

Apps call :func:`record` inside the transaction of their action; the audit app owns the
storage and the hash chain, looked up through the app registry so ``ums`` depends on no app.
Who acted, from where and through which channel comes from :mod:`ums.context`.
"""

from __future__ import annotations

import datetime
import decimal
import functools
import uuid
from collections.abc import Iterable
from typing import Any

from django.apps import apps
from django.db import models

from ums import context
from ums.actions import at_end_of_action


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, models.Model):
        return value.pk
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    return str(value)


def snapshot(obj: models.Model, fields: Iterable[str] | None = None) -> dict[str, Any]:
    """The audited values of ``obj``: its ``audit_fields`` unless ``fields`` is given.

    Secrets never appear: models list only safe fields, and password-like names are masked.
    """
    names = list(fields if fields is not None else getattr(obj, "audit_fields", ()))
    data: dict[str, Any] = {}
    for name in names:
        field = obj._meta.get_field(name)
        attname = getattr(field, "attname", name)
        data[name] = _jsonable(getattr(obj, attname))
    return data


def diff(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict, dict]:
    """Only the keys whose values changed, as (before, after)."""
    keys = [k for k in after if before.get(k) != after.get(k)]
    return {k: before.get(k) for k in keys}, {k: after[k] for k in keys}


def record(
    action: str,
    *,
    obj: models.Model | None = None,
    object_type: str | None = None,
    object_id: Any = None,
    object_repr: str | None = None,
    customer: Any = None,
    customer_path: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    actor: Any = context.current,
) -> None:
    """Append one audit record. Call inside the action's transaction.

    Inside an action the record is appended as the action's last step (see
    :func:`ums.actions.at_end_of_action`), with what it says fixed now. The append locks no
    shared row; the record is linked into the hash chain after the commit (audit.chainer).
    """
    ctx = context.current()
    if actor is context.current:
        actor = ctx.actor
    if obj is not None:
        object_type = object_type or obj._meta.label_lower
        object_id = obj.pk if object_id is None else object_id
        object_repr = object_repr if object_repr is not None else str(obj)
    if customer is None and obj is not None:
        customer = getattr(obj, "audit_customer", None)
    if customer is not None and customer_path is None:
        customer_path = customer.path
    values = {
        "action": action,
        "actor": actor,
        "actor_name": getattr(actor, "audit_name", None)
        or ("system" if actor is None else str(actor)),
        "source_ip": ctx.ip,
        "channel": ctx.channel,
        "request_id": ctx.request_id,
        "object_type": object_type or "",
        "object_id": "" if object_id is None else str(object_id),
        "object_repr": (object_repr or "")[:300],
        "customer_id": getattr(customer, "pk", None),
        "customer_path": customer_path or "",
        "changes": _jsonable({"before": before or {}, "after": after or {}, **(extra or {})}),
    }
    AuditRecord = apps.get_model("audit", "AuditRecord")
    at_end_of_action(functools.partial(AuditRecord.objects.append, **values))
