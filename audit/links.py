"""Links from audit records to the objects they name, and back (an object's history).

A record keeps ``object_type`` (``app.model``) and ``object_id`` as plain values: the object
may since have been deleted or moved out of the reader's scope. A link is drawn only when
the object still exists, is in scope and its page is one the reader may open; each object
type on a page costs one scoped query, whatever the number of records.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.urls import reverse

from ums import scoping


@dataclass(frozen=True)
class ObjectPage:
    url_name: str
    permission: str | None


# object_type -> the portal page of one such object
OBJECT_PAGES: dict[str, ObjectPage] = {
    "tenants.customer": ObjectPage("tenants:customer-detail", "customers.view"),
    "tenants.administrator": ObjectPage("tenants:administrator-detail", "administrators.view"),
    "mail.domain": ObjectPage("mail:domain-detail", "mail.view"),
    "mail.mailbox": ObjectPage("mail:mailbox-edit", "mail.view"),
    "servers.node": ObjectPage("servers:node-detail", "servers.view"),
    "spamhold.heldmessage": ObjectPage("spamhold:message", "spamhold.view"),
    "ums.job": ObjectPage("portal:job-detail", None),
}


def _model(object_type: str) -> Any:
    app_label, _dot, model_name = object_type.partition(".")
    try:
        return apps.get_model(app_label, model_name)
    except (LookupError, ValueError):
        return None


def _int_id(value: str) -> int | None:
    return int(value) if value.isdigit() and len(value) < 19 else None


def object_urls(records: Iterable[Any], user: Any) -> dict[tuple[str, str], str]:
    """{(object_type, object_id): url} for the records' objects the user may open."""
    wanted: dict[str, set[int]] = defaultdict(set)
    for record in records:
        page = OBJECT_PAGES.get(record.object_type)
        object_id = _int_id(record.object_id or "")
        if page is None or object_id is None:
            continue
        if page.permission and not user.has_permission(page.permission):
            continue
        wanted[record.object_type].add(object_id)
    urls: dict[tuple[str, str], str] = {}
    for object_type, ids in wanted.items():
        model = _model(object_type)
        if model is None:
            continue
        found = scoping.scope_queryset(model._default_manager.filter(pk__in=ids), user)
        for pk in found.values_list("pk", flat=True):
            urls[(object_type, str(pk))] = reverse(OBJECT_PAGES[object_type].url_name, args=[pk])
    return urls


def object_in_scope(object_type: str, object_id: str, user: Any) -> Any:
    """The object, when its type is known, it exists and it is in the user's scope."""
    model = _model(object_type)
    pk = _int_id(object_id)
    if model is None or pk is None or not hasattr(model, "scope_path_field"):
        return None
    return scoping.scope_queryset(model._default_manager.filter(pk=pk), user).first()


def object_exists(object_type: str, object_id: str) -> bool:
    """Whether the object exists at all, in anyone's scope (for a 404 outside scope)."""
    model = _model(object_type)
    pk = _int_id(object_id)
    if model is None or pk is None:
        return False
    return model._default_manager.filter(pk=pk).exists()
