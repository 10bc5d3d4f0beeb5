"""API token authentication: ``Authorization: Bearer ums_<prefix>_<secret>``.

A token acts exactly as its owner: same scope, same permissions (less writes when it is
read-only, enforced by ``ums.api.permissions``).
"""

from __future__ import annotations

from typing import Any

from django.db.models import BooleanField, Exists, F, Func, OuterRef, QuerySet
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from ums import context
from ums.middleware import client_ip

from .. import tokens
from ..actions import record_token_use
from ..models import ApiToken, Customer
from ..twofactor import policy


class _IsAncestorOrSelf(Func):
    """``path = ANY(<every ancestor-or-self path of other>)`` ('/1/5/' gives '/1/' and
    '/1/5/'), computed in SQL as ``Customer.ancestor_paths`` does in Python."""

    arity = 2
    output_field = BooleanField()

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        (path, path_params), (other, other_params) = (
            compiler.compile(e) for e in self.get_source_expressions()
        )
        # Compiled column references, no values: those stay parameters.
        sql = (
            f"{path} = ANY(ARRAY(SELECT left({other}, n) FROM generate_series(2, "  # noqa: S608
            f"length({other})) AS n WHERE substr({other}, n, 1) = '/'))"
        )
        return sql, [*path_params, *other_params * 3]


def _ancestors() -> QuerySet:
    """The token owner's customer and its ancestors, for a subquery of the token query
    (unique ``path`` index: one probe per level)."""
    return Customer.objects.filter(_IsAncestorOrSelf(F("path"), OuterRef("owner__customer__path")))


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
        # Nothing is cached: a revoked token, a removed permission or a disabled customer
        # takes effect on the very next request. The token, its owner, the owner's
        # customer and the flags of that customer's ancestors come in one statement.
        token = (
            ApiToken.objects.select_related("owner", "owner__customer")
            .annotate(
                path_disabled=Exists(_ancestors().filter(is_active=False)),
                path_requiring=Exists(_ancestors().filter(require_two_factor=True)),
            )
            .filter(prefix=parts[0])
            .first()
        )
        if token is None or not tokens.matches(parts[1], token.secret_hash):
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not token.is_usable():
            raise exceptions.AuthenticationFailed(_("This token has expired or was revoked."))
        owner = token.owner
        if not owner.is_active or token.path_disabled:
            raise exceptions.AuthenticationFailed(_("This account is disabled."))
        # A token made before the customer required a second factor must not bypass it.
        if token.path_requiring and not policy.is_enrolled(owner):
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
