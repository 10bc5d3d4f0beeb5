"""Who is acting, from where and through which channel, for the current unit of work.

The request middleware, the API authentication, management commands and Celery tasks fill
this in; the audit entry point reads it, so actions never pass request details by hand.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

CHANNEL_PORTAL = "portal"
CHANNEL_API = "api"
CHANNEL_CLI = "cli"
CHANNEL_TASK = "task"
CHANNEL_SYSTEM = "system"


@dataclass(frozen=True)
class ActionContext:
    request_id: str
    channel: str = CHANNEL_SYSTEM
    ip: str | None = None
    actor: Any = None  # an Administrator, or None for the system itself


_current: contextvars.ContextVar[ActionContext | None] = contextvars.ContextVar(
    "ums_action_context", default=None
)


def new_request_id() -> str:
    return uuid.uuid4().hex


def current() -> ActionContext:
    """The active context, or a fresh system context (never stored) outside any block."""
    ctx = _current.get()
    if ctx is None:
        return ActionContext(request_id=new_request_id())
    return ctx


def set_actor(actor: Any) -> None:
    """Name the actor of the active block (a request once authenticated).

    Outside an ``acting`` block there is nothing to update: storing a context at top level
    would attribute every later action of the process (a worker, a test run) to this actor.
    """
    ctx = _current.get()
    if ctx is not None:
        _current.set(replace(ctx, actor=actor))


@contextmanager
def acting(
    *,
    channel: str,
    actor: Any = None,
    ip: str | None = None,
    request_id: str | None = None,
) -> Iterator[ActionContext]:
    """Run a block as ``actor`` through ``channel``; restores the previous context after."""
    ctx = ActionContext(
        request_id=request_id or new_request_id(), channel=channel, ip=ip, actor=actor
    )
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


@contextmanager
def acting_as(actor: Any) -> Iterator[ActionContext]:
    """Attribute everything in the block to ``actor``, keeping channel, IP and request id."""
    ctx = current()
    if actor is None or ctx.actor is actor:
        yield ctx
        return
    # Outside any block this starts one (with a new request id) for the duration only.
    token = _current.set(replace(ctx, actor=actor))
    try:
        yield _current.get()
    finally:
        _current.reset(token)
