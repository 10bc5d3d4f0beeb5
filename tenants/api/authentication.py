"""API token authentication: ``Authorization: Bearer ums_<prefix>_<secret>``.

A token acts exactly as its owner: same scope, same permissions (less writes when it is
read-only, enforced by ``ums.api.permissions``).
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from ums import context
from ums.middleware import client_ip

from .. import tokens
from ..actions import record_token_use
from ..models import ApiToken, Customer
from ..twofactor import policy


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
        token = (
            ApiToken.objects.select_related("owner", "owner__customer")
            .filter(prefix=parts[0])
            .first()
        )
        if token is None or not tokens.matches(parts[1], token.secret_hash):
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not token.is_usable():
            raise exceptions.AuthenticationFailed(_("This token has expired or was revoked."))
        owner = token.owner
        # One query answers both "is any customer on the path disabled" and "does any
        # require a second factor".
        path_flags = Customer.objects.filter(path__in=owner.customer.ancestor_paths).aggregate(
            disabled=Count("pk", filter=Q(is_active=False)),
            requiring=Count("pk", filter=Q(require_two_factor=True)),
        )
        if not owner.is_active or path_flags["disabled"]:
            raise exceptions.AuthenticationFailed(_("This account is disabled."))
        # A token made before the customer required a second factor must not bypass it.
        if path_flags["requiring"] and not policy.is_enrolled(owner):
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
