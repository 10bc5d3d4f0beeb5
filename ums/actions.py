"""Helpers every app's action layer uses: permission checks and the post-write scope check.

``actor=None`` means the system itself (seed, migrations, CLI run without an
administrator): it is audited as "system" and bypasses permission checks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.http import Http404
from django.utils.translation import gettext as _

from ums import context, scoping

F = TypeVar("F", bound=Callable[..., Any])


def action(func: F) -> F:
    """Mark an action function: one transaction, audited as the ``actor`` it was given.

    The actor passed explicitly wins over whoever the request context holds, so an action
    called from a task, a command or a test is attributed correctly.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, actor: Any, **kwargs: Any) -> Any:
        with context.acting_as(actor), transaction.atomic():
            return func(*args, actor=actor, **kwargs)

    return wrapper  # type: ignore[return-value]


def require_permission(actor: Any, code: str) -> None:
    if actor is None:
        return
    if not actor.has_permission(code):
        raise PermissionDenied(_("You do not have the permission “%(code)s”.") % {"code": code})


def require_in_scope(obj: models.Model, actor: Any) -> None:
    """404 for anything outside the actor's subtree, exactly as a lookup would answer."""
    if actor is None:
        return
    if not scoping.in_scope(obj, actor):
        raise Http404


def recheck_in_scope(obj: models.Model, actor: Any) -> None:
    """After a write, read the row back through the scoping rule inside the transaction.

    Raising here rolls the whole action back, so nothing can be written out of scope even if
    an earlier check was missed.
    """
    if actor is None:
        return
    model = type(obj)
    if not scoping.scope_queryset(model._default_manager.filter(pk=obj.pk), actor).exists():
        raise Http404
