"""The one place where sessions and the second-factor policy are enforced, on every request.

1. Session life: a session that was revoked ("sign out everywhere else"), sat idle too long
   or outlived the absolute timeout is ended before the view runs.
2. Second factor: an administrator who passed the password step but owes a second factor
   is sent to the challenge screen, and one whose customer requires a second factor they
   have not set up is sent to enrolment, before anything else. Only the pages needed to do
   that (and to log out or switch language) stay reachable.

The API gets the same rule: a session that has not passed the second factor does not
authenticate API calls (a 401 with a clear message), while token authentication is left to
the token (tokens are only issued after a fresh second factor).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from django.contrib import messages
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import reverse
from django.utils.translation import gettext as _

from ums import auditing

from . import session_records
from .twofactor.session import Gate, gate

# Reachable in any state: leaving, changing language, and the SSO endpoints.
ALWAYS = {
    "portal:logout",
    "set_language",
    "tenants:sso-start",
    "tenants:saml-acs",
    "tenants:saml-login",
    "tenants:saml-metadata",
}
CHALLENGE_VIEWS = ALWAYS | {
    "portal:two-factor",
    "portal:two-factor-key-options",
    "portal:two-factor-key-verify",
}
ENROL_VIEWS = ALWAYS | {
    "tenants:two-factor",
    "tenants:totp-enrol",
    "tenants:security-key-options",
    "tenants:security-key-register",
    "tenants:recovery-codes",
}


def _is_api(request: HttpRequest) -> bool:
    return request.path_info.startswith("/api/")


def _end_session(request: HttpRequest, reason: str) -> None:
    """Drop the session without firing ``user_logged_out`` (this is not the user's logout)."""
    user = request.user
    if reason in {session_records.ENDED_IDLE, session_records.ENDED_ABSOLUTE}:
        auditing.record("auth.session_expired", obj=user, actor=user, extra={"reason": reason})
    request.session.flush()
    request.user = AnonymousUser()
    if not _is_api(request):
        # gettext at request time, in the request's language.
        text = {
            session_records.ENDED_IDLE: _(
                "Your session ended after a period of inactivity. Log in again."
            ),
            session_records.ENDED_ABSOLUTE: _(
                "Your session reached its maximum length. Log in again."
            ),
            session_records.ENDED_REVOKED: _("This session was signed out. Log in again."),
        }.get(reason)
        if text:
            messages.info(request, text)


class IdentityMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            reason = session_records.check(request)
            if reason is not None:
                _end_session(request, reason)
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view_func: Any, view_args: Any, view_kwargs: Any
    ) -> HttpResponse | None:
        user = request.user
        if not user.is_authenticated:
            return None
        state = gate(request)
        if state is Gate.OK:
            return None
        match = request.resolver_match
        name = match.view_name if match else ""
        allowed = CHALLENGE_VIEWS if state is Gate.CHALLENGE else ENROL_VIEWS
        if name in allowed:
            return None
        if _is_api(request):
            # The session does not count for the API; a token in the header still may.
            request.user = AnonymousUser()
            if "HTTP_AUTHORIZATION" in request.META:
                return None
            if state is Gate.CHALLENGE:
                text = _("Complete the two-factor login in the portal first.")
            else:
                text = _("Your customer requires two-factor authentication: set it up first.")
            return JsonResponse({"message": text}, status=401)
        target = "portal:two-factor" if state is Gate.CHALLENGE else "tenants:two-factor"
        if state is Gate.ENROL:
            messages.warning(
                request,
                _("Your customer requires two-factor authentication. Set it up to continue."),
            )
        next_path = request.get_full_path() if request.method == "GET" else ""
        url = reverse(target)
        if next_path and next_path != url:
            url += "?next=" + quote(next_path, safe="/")
        return HttpResponseRedirect(url)
