"""Helpers every app's action layer uses: permission checks and the post-write scope check.

``actor=None`` means the system itself (seed, migrations, CLI run without an
administrator): it is audited as "system" and bypasses permission checks.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.exceptions import PermissionDenied
from django.db import connection, models, transaction
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
            pending: list[Callable[[], Any]] = []
            token = _AT_END.set((*_AT_END.get(), pending))
            try:
                result = func(*args, actor=actor, **kwargs)
            finally:
                _AT_END.reset(token)
            outer = _AT_END.get()
            if outer:
                # A nested action's steps run with its caller's, once the whole action has
                # done its work; a nested action that raised leaves none behind.
                outer[-1].extend(pending)
            else:
                for step in pending:
                    step()
            return result

    return wrapper  # type: ignore[return-value]


# The steps each running action (innermost last) left for the end of its transaction.
_AT_END: contextvars.ContextVar[tuple[list[Callable[[], Any]], ...]] = contextvars.ContextVar(
    "ums_action_at_end", default=()
)


def at_end_of_action(step: Callable[[], Any]) -> None:
    """Run ``step`` as the last thing of the current action's transaction, else now.

    For writes to rows every action shares (the audit chain head): locked there, they are
    held for the few statements before the commit instead of the whole action, so actions
    on unrelated objects overlap instead of queueing. The step still runs in the action's
    transaction: if it fails, nothing of the action is written.
    """
    stack = _AT_END.get()
    if stack:
        stack[-1].append(step)
    else:
        step()


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
    path = scoping.scope_path_of(actor)
    if path is None:
        raise Http404
    # Every write runs this: the statement is kept per model instead of compiling the
    # queryset each time (issue 19). ``starts_with`` is the ``__startswith`` prefix test
    # without LIKE's wildcards to escape.
    model = type(obj)
    sql = _recheck_sql(model)
    if sql is None:
        found = scoping.scope_queryset(model._default_manager.filter(pk=obj.pk), actor).exists()
    else:
        with connection.cursor() as cursor:
            cursor.execute(sql, [obj.pk, path])
            found = cursor.fetchone() is not None
    if not found:
        raise Http404


@functools.cache
def _recheck_sql(model: type[models.Model]) -> str | None:
    """The check as one statement on the model's own table; None (use the queryset) when
    the path column lives elsewhere (an inherited model)."""
    meta = model._meta
    path = meta.get_field(scoping.path_field(model))
    if getattr(path, "model", None) is not model or not getattr(path, "column", None):
        return None
    quote = connection.ops.quote_name
    return (
        f"SELECT 1 FROM {quote(meta.db_table)} WHERE {quote(meta.pk.column)} = %s "  # noqa: S608
        f"AND starts_with({quote(path.column)}::text, %s) LIMIT 1"
    )
