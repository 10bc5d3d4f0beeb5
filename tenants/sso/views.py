"""SAML endpoints of the portal: SP metadata, start of a login, the assertion consumer, and
"sign in with your work email" (the email's domain picks the customer's provider).

The assertion consumer is CSRF-exempt by necessity (the IdP's page posts to it); what
protects it is the signed response, its Destination and Audience, its validity window, the
replay store and, when the login started here, InResponseTo bound by a signed cookie.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.core import signing
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from ums import auditing

from ..auth_views import SsoStartForm, safe_next
from ..models_identity import SamlIdentityProvider
from ..twofactor import session as tf_session
from ..twofactor.session import Gate, gate
from . import saml

REQUEST_COOKIE = "ums_saml_request"
REQUEST_COOKIE_SALT = "tenants.sso.saml.request"
REQUEST_COOKIE_AGE = 600


def _provider(slug: str) -> SamlIdentityProvider:
    provider = (
        SamlIdentityProvider.objects.select_related("customer")
        .filter(slug=slug, enabled=True)
        .first()
    )
    if provider is None:
        raise Http404
    return provider


class SamlMetadataView(View):
    http_method_names = ["get", "head"]

    def get(self, request: HttpRequest, slug: str) -> HttpResponse:
        provider = _provider(slug)
        return HttpResponse(
            saml.metadata_xml(provider), content_type="application/samlmetadata+xml"
        )


class SamlLoginView(View):
    """Send the browser to the IdP with an AuthnRequest whose id a signed cookie remembers."""

    http_method_names = ["get"]

    def get(self, request: HttpRequest, slug: str) -> HttpResponse:
        provider = _provider(slug)
        relay = safe_next(request.GET.get("next")) or reverse("portal:home")
        url, request_id = saml.start_login(request, provider, relay)
        response = HttpResponseRedirect(url)
        secure = settings.USES_HTTPS
        # The IdP posts back cross-site: the session cookie (SameSite=Lax) does not come
        # along, so the request id rides in its own cookie (SameSite=None needs Secure).
        response.set_cookie(
            REQUEST_COOKIE,
            signing.dumps({"slug": provider.slug, "id": request_id}, salt=REQUEST_COOKIE_SALT),
            max_age=REQUEST_COOKIE_AGE,
            secure=secure,
            httponly=True,
            samesite="None" if secure else "Lax",
            path="/sso/",
        )
        return response


def _pending_request_id(request: HttpRequest, provider: SamlIdentityProvider) -> str | None:
    raw = request.COOKIES.get(REQUEST_COOKIE)
    if not raw:
        return None
    try:
        data = signing.loads(raw, salt=REQUEST_COOKIE_SALT, max_age=REQUEST_COOKIE_AGE)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or data.get("slug") != provider.slug:
        return None
    value = data.get("id")
    return value if isinstance(value, str) else None


@method_decorator(csrf_exempt, name="dispatch")
class SamlAcsView(View):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, slug: str) -> HttpResponse:
        provider = _provider(slug)
        try:
            identity = saml.validate(
                request,
                provider,
                request.POST.get("SAMLResponse", ""),
                _pending_request_id(request, provider),
            )
            saml.consume_assertion(provider, identity)
            admin = saml.administrator_for(provider, identity)
        except saml.SamlError as exc:
            auditing.record(
                "auth.saml_failed",
                obj=provider,
                actor=None,
                extra={"reason": exc.reason},
            )
            response = TemplateResponse(
                request, "portal/sso_error.html", {"provider": provider}, status=403
            )
            response.delete_cookie(REQUEST_COOKIE, path="/sso/")
            return response
        request.ums_login_method = "saml"
        login(request, admin, backend="tenants.auth.AdministratorBackend")
        auditing.record(
            "auth.saml_login",
            obj=admin,
            actor=admin,
            extra={
                "provider": provider.pk,
                "name_id": identity.name_id[:200],
                "idp_mfa": provider.enforces_mfa,
            },
        )
        if provider.enforces_mfa:
            # The customer vouches that its IdP asked for a second factor.
            tf_session.mark_verified(request, "saml")
        target = safe_next(request.POST.get("RelayState")) or reverse("portal:home")
        state = gate(request, admin)
        if state is not Gate.OK:
            name = "portal:two-factor" if state is Gate.CHALLENGE else "tenants:two-factor"
            target = f"{reverse(name)}?next={quote(target, safe='/')}"
        response = HttpResponseRedirect(target)
        response.delete_cookie(REQUEST_COOKIE, path="/sso/")
        return response


class SsoStartView(View):
    """POST ``email``: find the identity provider serving its domain and start there."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        form = SsoStartForm(request.POST)
        if form.is_valid():
            domain = form.cleaned_data["email"].rsplit("@", 1)[-1].lower()
            for provider in SamlIdentityProvider.objects.filter(enabled=True).only(
                "slug", "email_domains"
            ):
                if domain in (provider.email_domains or []):
                    url = reverse("tenants:saml-login", args=[provider.slug])
                    following = safe_next(request.POST.get("next"))
                    return redirect(
                        f"{url}?next={quote(following, safe='/')}" if following else url
                    )
        messages.error(request, _("No single sign-on is set up for this email address."))
        return redirect("portal:login")
