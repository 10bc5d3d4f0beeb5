"""API token authentication: ``Authorization: Bearer ums_<prefix>_<secret>``.

A token acts exactly as its owner: same scope, same permissions (less writes when it is
read-only, enforced by ``ums.api.permissions``).
"""

from __future__ import annotations

import functools
from typing import Any

from django.db import connection
from django.db.models import Model
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from ums import context
from ums.middleware import client_ip

from .. import tokens
from ..actions import record_token_use
from ..models import Administrator, ApiToken, Customer
from ..twofactor import policy

_MODELS = (ApiToken, Administrator, Customer)


@functools.cache
def _lookup_sql() -> str:
    """The token, its owner, the owner's customer and the flags of that customer's
    ancestors (the unique ``path`` index: one probe per level) in one statement.

    Written once per process from the models' own columns: compiling the equivalent ORM
    query (two ``Exists`` annotations over a path function) cost more CPU than the rest of
    a first page of mailboxes, and it ran on every API request.
    """
    quote = connection.ops.quote_name
    columns = ", ".join(
        f"{alias}.{quote(f.column)}"
        for alias, model in zip("tac", _MODELS, strict=True)
        for f in model._meta.concrete_fields
    )
    ancestors = (
        f"SELECT 1 FROM {quote(Customer._meta.db_table)} x WHERE x.path = ANY(ARRAY("  # noqa: S608
        "SELECT left(c.path, n) FROM generate_series(2, length(c.path)) AS n "
        "WHERE substr(c.path, n, 1) = '/'))"
    )
    return (
        f"SELECT {columns}, "  # noqa: S608 (identifiers from the models, the prefix a parameter)
        f"EXISTS({ancestors} AND NOT x.is_active), "
        f"EXISTS({ancestors} AND x.require_two_factor) "
        f"FROM {quote(ApiToken._meta.db_table)} t "
        f"JOIN {quote(Administrator._meta.db_table)} a ON a.id = t.owner_id "
        f"JOIN {quote(Customer._meta.db_table)} c ON c.id = a.customer_id "
        "WHERE t.prefix = %s"
    )


def _build(model: type[Model], values: list[Any]) -> Model:
    """A model instance from its columns, through each field's database converters
    (``permissions`` is JSON) exactly as a queryset would build it."""
    fields = model._meta.concrete_fields
    converted = []
    for f, value in zip(fields, values, strict=True):
        if value is not None and hasattr(f, "from_db_value"):
            value = f.from_db_value(value, None, connection)
        converted.append(value)
    return model.from_db(connection.alias, [f.attname for f in fields], converted)


def _lookup(prefix: str) -> tuple[ApiToken, bool, bool] | None:
    """The token of ``prefix`` with its owner and customer attached, and whether an
    ancestor-or-self of that customer is disabled or requires a second factor."""
    with connection.cursor() as cursor:
        cursor.execute(_lookup_sql(), [prefix])
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    objects = []
    for model in _MODELS:
        width = len(model._meta.concrete_fields)
        objects.append(_build(model, values[:width]))
        values = values[width:]
    token, owner, customer = objects
    owner._state.fields_cache["customer"] = customer
    token._state.fields_cache["owner"] = owner
    return token, bool(values[0]), bool(values[1])


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keywords = (b"bearer", b"token")

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(_("Malformed Authorization header."))
        try:
            parts = tokens.split(header[1].decode("ascii"))
        except UnicodeDecodeError:
            parts = None
        if parts is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        # Nothing about the token is cached: a revoked token, a removed permission or a
        # disabled customer takes effect on the very next request. One precompiled
        # statement per request (see _lookup_sql).
        found = _lookup(parts[0])
        token, path_disabled, path_requiring = found if found else (None, False, False)
        if token is None or not tokens.matches(parts[1], token.secret_hash):
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not token.is_usable():
            raise exceptions.AuthenticationFailed(_("This token has expired or was revoked."))
        owner = token.owner
        if not owner.is_active or path_disabled:
            raise exceptions.AuthenticationFailed(_("This account is disabled."))
        # A token made before the customer required a second factor must not bypass it.
        if path_requiring and not policy.is_enrolled(owner):
            raise exceptions.AuthenticationFailed(
                _(
                    "Your customer requires two-factor authentication: set it up in the "
                    "portal before using API tokens."
                )
            )
        context.set_actor(owner)
        record_token_use(token, client_ip(request._request))
        return owner, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
