"""The one scoping rule: an administrator sees their home customer and everything below it.

Every tenant-owned model declares ``scope_path_field``, the name of a materialised customer
path column (``/1/5/12/``). A subtree is then one indexed prefix comparison; no access rows
have to be kept in step with the tree. API viewsets, portal views and the choices of forms
and serializers all call :func:`scope_queryset`; nothing filters by hand.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.http import Http404


def path_field(model: type[models.Model]) -> str:
    field = getattr(model, "scope_path_field", None)
    if not field:
        raise ImproperlyConfigured(f"{model.__name__} does not declare scope_path_field")
    return field


def scope_path_of(user: Any) -> str | None:
    """The customer path an authenticated administrator works under, else None."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return getattr(user, "customer_path", None) or None


def scope_queryset(queryset: models.QuerySet, user: Any) -> models.QuerySet:
    """Restrict ``queryset`` to what ``user`` may see; nothing for anonymous callers."""
    path = scope_path_of(user)
    if path is None:
        return queryset.none()
    return queryset.filter(**{f"{path_field(queryset.model)}__startswith": path})


def in_scope(obj: models.Model, user: Any) -> bool:
    path = scope_path_of(user)
    value = getattr(obj, path_field(type(obj)), None)
    return bool(path and value and value.startswith(path))


def path_in_scope(path: str | None, user: Any) -> bool:
    scope = scope_path_of(user)
    return bool(scope and path and path.startswith(scope))


def get_in_scope_or_404(queryset: models.QuerySet, user: Any, **lookup: Any) -> models.Model:
    try:
        return scope_queryset(queryset, user).get(**lookup)
    except (queryset.model.DoesNotExist, ValueError, TypeError) as exc:
        raise Http404 from exc
