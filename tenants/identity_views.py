"""Portal pages of identity: the second-factor challenge, one's own factors and sessions,
a customer's two-factor policy and SSO settings, and resetting another's second factor.

Security-key ceremonies are small JSON endpoints driven by ``static/js/webauthn.js``.
Changes that need a recent second factor send the administrator through the challenge
screen first (a "step-up") and come back.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
)
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views import View

from ums import scoping
from ums.portal.views import PortalMixin, apply_validation_error

from . import identity_actions as ia
from . import permissions as perms
from . import session_records
from .auth_views import safe_next
from .identity_forms import (
    LdapDirectoryForm,
    SamlProviderForm,
    SecondFactorForm,
    TotpConfirmForm,
    TwoFactorPolicyForm,
)
from .models import Administrator, Customer
from .models_identity import (
    LdapDirectory,
    RecoveryCode,
    SamlIdentityProvider,
    SessionRecord,
    TotpDevice,
    WebAuthnCredential,
)
from .sso import ldap as ldap_sso
from .sso import saml
from .twofactor import policy, qr, totp, verify, webauthn
from .twofactor import session as tf_session

PENDING_TOTP_SECONDS = 600
SESSIONS_LISTED = 50
JSON_BODY_MAX = 64 * 1024


def _me(request: HttpRequest) -> Administrator:
    return Administrator.objects.select_related("customer").get(pk=request.user.pk)


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response


def step_up_url(next_url: str) -> str:
    return f"{reverse('portal:two-factor')}?next={quote(next_url, safe='/')}"


def needs_step_up(request: HttpRequest) -> bool:
    return policy.is_enrolled(request.user) and not tf_session.is_fresh(request)


def step_up(request: HttpRequest, next_url: str) -> HttpResponse:
    messages.info(request, _("Confirm it is you with your second factor to continue."))
    return redirect(step_up_url(next_url))


def _json_body(request: HttpRequest) -> dict[str, Any]:
    if len(request.body) > JSON_BODY_MAX:
        raise ValueError("body too large")
    data = json.loads(request.body.decode() or "{}")
    if not isinstance(data, dict):
        raise ValueError("expected an object")
    return data


def _error_list(exc: ValidationError | PermissionDenied) -> list[str]:
    if isinstance(exc, ValidationError):
        return list(exc.messages)
    return [str(exc) or _("Permission denied.")]


# ------------------------------------------------------------------- the login challenge


class TwoFactorChallengeView(PortalMixin, View):
    """The two-factor challenge after the password, and the step-up before sensitive changes."""

    template_name = "portal/two_factor.html"

    def _next(self) -> str:
        request = self.request
        return safe_next(request.POST.get("next") or request.GET.get("next")) or reverse(
            "portal:home"
        )

    def _context(self, form: SecondFactorForm) -> dict[str, Any]:
        user = self.request.user
        context = {
            "form": form,
            "next": self._next(),
            "has_totp": policy.has_totp(user),
            "has_keys": policy.has_security_key(user),
            "step_up": tf_session.verified(self.request) is not None,
            "locked": verify.throttle.second_factor_locked(user.pk),
        }
        if tf_session.verified(self.request) is None:
            # Nothing to navigate to until the factor is passed (the middleware holds it).
            context["navigation"] = []
        return context

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not policy.is_enrolled(request.user) or tf_session.is_fresh(request):
            return redirect(self._next())
        return _no_store(
            TemplateResponse(request, self.template_name, self._context(SecondFactorForm()))
        )

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        form = SecondFactorForm(request.POST)
        if form.is_valid():
            purpose = "step-up" if tf_session.verified(request) else "login"
            try:
                method = verify.check_code(_me(request), form.cleaned_data["code"], purpose=purpose)
            except verify.SecondFactorLocked as exc:
                form.add_error(None, str(exc))
            else:
                if method:
                    tf_session.mark_verified(request, method)
                    if method == verify.METHOD_RECOVERY:
                        messages.warning(
                            request,
                            _("You used a recovery code; it will not work again. %(n)d are left.")
                            % {
                                "n": RecoveryCode.objects.filter(
                                    owner=request.user, used_at__isnull=True
                                ).count()
                            },
                        )
                    return redirect(self._next())
                form.add_error("code", _("This code is not right, or it was already used."))
        return _no_store(
            TemplateResponse(request, self.template_name, self._context(form), status=200)
        )


class ChallengeKeyOptionsView(PortalMixin, View):
    """POST: options for navigator.credentials.get() with the administrator's own keys."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        me = _me(request)
        try:
            verify.ensure_not_locked(me)
        except verify.SecondFactorLocked as exc:
            return JsonResponse({"message": str(exc)}, status=429)
        if not policy.has_security_key(me):
            return JsonResponse({"message": _("You have no security key.")}, status=400)
        options = webauthn.authentication_options(request, me)
        return _no_store(HttpResponse(options, content_type="application/json"))


class ChallengeKeyVerifyView(PortalMixin, View):
    """POST ``{"credential": ...}``: the assertion; passes the second factor when it verifies."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        me = _me(request)
        purpose = "step-up" if tf_session.verified(request) else "login"
        try:
            verify.ensure_not_locked(me)
            body = _json_body(request)
            key = webauthn.verify_authentication(request, me, body.get("credential") or {})
        except verify.SecondFactorLocked as exc:
            return JsonResponse({"message": str(exc)}, status=429)
        except (ValueError, webauthn.CeremonyError):
            verify.note_result(me, None, purpose=purpose)
            return JsonResponse(
                {"message": _("The security key could not be verified. Try again.")}, status=400
            )
        verify.note_result(me, verify.METHOD_WEBAUTHN, purpose=purpose)
        tf_session.mark_verified(request, verify.METHOD_WEBAUTHN)
        target = safe_next(body.get("next")) or reverse("portal:home")
        return JsonResponse({"redirect": target, "key": key.name})


# --------------------------------------------------------------- one's own second factors


class TwoFactorSettingsView(PortalMixin, View):
    template_name = "tenants/identity/two_factor.html"

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        me = _me(request)
        requiring = policy.requiring_customer(me.customer_path)
        context = {
            "has_totp": policy.has_totp(me),
            "keys": list(WebAuthnCredential.objects.filter(owner=me)),
            "recovery_left": RecoveryCode.objects.filter(owner=me, used_at__isnull=True).count(),
            "recovery_total": RecoveryCode.objects.filter(owner=me).count(),
            "required": requiring is not None,
            "requiring_name": requiring.name
            if requiring is not None and scoping.in_scope(requiring, me)
            else "",
            "enrolled": policy.is_enrolled(me),
            "fresh": tf_session.is_fresh(request),
        }
        return TemplateResponse(request, self.template_name, context)


def _pending_device(me: Administrator) -> TotpDevice | None:
    device = TotpDevice.objects.filter(owner=me, confirmed_at__isnull=True).first()
    if device is None:
        return None
    if (timezone.now() - device.created_at).total_seconds() > PENDING_TOTP_SECONDS:
        return None
    return device


class TotpEnrolView(PortalMixin, View):
    """Set up an authenticator app: QR code and secret, confirmed by a first code."""

    template_name = "tenants/identity/totp_enrol.html"

    def _render(self, device: TotpDevice, form: TotpConfirmForm) -> HttpResponse:
        me = self.request.user
        uri = totp.provisioning_uri(device.secret, me.username)
        context = {
            "form": form,
            "qr": qr.svg_data_uri(uri),
            "secret": device.secret,
            "secret_groups": " ".join(
                device.secret[i : i + 4] for i in range(0, len(device.secret), 4)
            ),
        }
        # The page shows the secret: no cache may keep it.
        return _no_store(TemplateResponse(self.request, self.template_name, context))

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        me = _me(request)
        if policy.has_totp(me):
            messages.info(request, _("An authenticator app is already set up."))
            return redirect("tenants:two-factor")
        device = _pending_device(me)
        if device is None:
            if policy.has_security_key(me) and not tf_session.is_fresh(request):
                return step_up(request, reverse("tenants:totp-enrol"))
            try:
                device = ia.start_totp_enrolment(
                    actor=me, proof=tf_session.proof_from_session(request)
                )
            except (ValidationError, PermissionDenied) as exc:
                for text in _error_list(exc):
                    messages.error(request, text)
                return redirect("tenants:two-factor")
        return self._render(device, TotpConfirmForm())

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        me = _me(request)
        device = _pending_device(me)
        if device is None:
            messages.error(request, _("The set-up expired. Start again."))
            return redirect("tenants:totp-enrol")
        form = TotpConfirmForm(request.POST)
        if form.is_valid():
            try:
                codes = ia.confirm_totp(actor=me, code=form.cleaned_data["code"])
            except ValidationError as exc:
                apply_validation_error(form, exc)
            else:
                # Possession of the app is just proven: this session has passed the factor.
                tf_session.mark_verified(request, verify.METHOD_TOTP)
                messages.success(request, _("Your authenticator app is set up."))
                if codes:
                    return _recovery_codes_page(request, codes)
                return redirect("tenants:two-factor")
        return self._render(device, form)


def _recovery_codes_page(request: HttpRequest, codes: list[str]) -> HttpResponse:
    """Rendered directly, never redirected: the codes must not rest in the session store."""
    response = TemplateResponse(request, "tenants/identity/recovery_codes.html", {"codes": codes})
    return _no_store(response)


class TotpRemoveView(PortalMixin, View):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if needs_step_up(request):
            return step_up(request, reverse("tenants:two-factor"))
        try:
            ia.remove_totp(actor=_me(request), proof=tf_session.proof_from_session(request))
        except (ValidationError, PermissionDenied) as exc:
            for text in _error_list(exc):
                messages.error(request, text)
        else:
            messages.success(request, _("The authenticator app is removed."))
        return redirect("tenants:two-factor")


class RecoveryCodesView(PortalMixin, View):
    """POST: a new set of recovery codes (the old ones stop working)."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if needs_step_up(request):
            return step_up(request, reverse("tenants:two-factor"))
        try:
            codes = ia.regenerate_recovery_codes(
                actor=_me(request), proof=tf_session.proof_from_session(request)
            )
        except (ValidationError, PermissionDenied) as exc:
            for text in _error_list(exc):
                messages.error(request, text)
            return redirect("tenants:two-factor")
        return _recovery_codes_page(request, codes)


class SecurityKeyOptionsView(PortalMixin, View):
    """POST: options for navigator.credentials.create() (registering a new key)."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        me = _me(request)
        if needs_step_up(request):
            return JsonResponse(
                {
                    "message": _("Confirm it is you with your second factor first."),
                    "redirect": step_up_url(reverse("tenants:two-factor")),
                },
                status=403,
            )
        return _no_store(
            HttpResponse(
                webauthn.registration_options(request, me), content_type="application/json"
            )
        )


class SecurityKeyRegisterView(PortalMixin, View):
    """POST ``{"name": ..., "credential": ...}``: verify and store a new security key."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        me = _me(request)
        was_enrolled = policy.is_enrolled(me)
        try:
            body = _json_body(request)
            data = webauthn.verify_registration(request, me, body.get("credential") or {})
            key = ia.add_security_key(
                actor=me,
                name=str(body.get("name") or ""),
                credential=data,
                proof=tf_session.proof_from_session(request),
            )
        except (ValueError, webauthn.CeremonyError):
            return JsonResponse(
                {"message": _("The security key could not be registered. Try again.")}, status=400
            )
        except (ValidationError, PermissionDenied) as exc:
            return JsonResponse({"message": " ".join(_error_list(exc))}, status=400)
        if not was_enrolled:
            # The first factor was just proven by registering it.
            tf_session.mark_verified(request, verify.METHOD_WEBAUTHN)
        messages.success(request, _("Security key “%(name)s” added.") % {"name": key.name})
        return JsonResponse({"redirect": reverse("tenants:two-factor")})


class SecurityKeyDeleteView(PortalMixin, View):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        key = get_object_or_404(WebAuthnCredential, pk=kwargs["pk"], owner_id=request.user.pk)
        if needs_step_up(request):
            return step_up(request, reverse("tenants:two-factor"))
        try:
            ia.remove_security_key(
                actor=_me(request), key=key, proof=tf_session.proof_from_session(request)
            )
        except (ValidationError, PermissionDenied) as exc:
            for text in _error_list(exc):
                messages.error(request, text)
        else:
            messages.success(request, _("Security key “%(name)s” removed.") % {"name": key.name})
        return redirect("tenants:two-factor")


# ------------------------------------------------------------------------------ sessions


class SessionListView(PortalMixin, View):
    template_name = "tenants/identity/sessions.html"

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        current = session_records.current_hash(request)
        records = list(
            SessionRecord.objects.filter(owner_id=request.user.pk, revoked_at__isnull=True)[
                :SESSIONS_LISTED
            ]
        )
        rows = [(record, record.key_hash == current) for record in records]
        return TemplateResponse(
            request,
            self.template_name,
            {"rows": rows, "others": sum(1 for _r, is_current in rows if not is_current)},
        )


class SessionRevokeView(PortalMixin, View):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        record = get_object_or_404(SessionRecord, pk=kwargs["pk"], owner_id=request.user.pk)
        ia.revoke_session(actor=_me(request), record=record)
        messages.success(request, _("The session is signed out."))
        return redirect("tenants:sessions")


class SessionRevokeOthersView(PortalMixin, View):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        count = ia.revoke_other_sessions(
            actor=_me(request), keep_hash=session_records.current_hash(request)
        )
        messages.success(request, _("Signed out everywhere else (%(n)d sessions).") % {"n": count})
        return redirect("tenants:sessions")


# ------------------------------------------------------------- a customer's identity page


class CustomerIdentityView(PortalMixin, View):
    """A customer's sign-in settings: the two-factor policy, SAML and LDAP."""

    permission_required = perms.CUSTOMERS_VIEW
    template_name = "tenants/identity/customer_identity.html"

    def customer(self) -> Customer:
        return scoping.get_in_scope_or_404(
            Customer.objects.all(), self.request.user, pk=self.kwargs["pk"]
        )

    def render(self, customer: Customer, **forms: Any) -> HttpResponse:
        from .views import breadcrumbs

        user = self.request.user
        provider = SamlIdentityProvider.objects.filter(customer=customer).first()
        directory = LdapDirectory.objects.filter(customer=customer).first()
        above = policy.required_above(customer)
        context = {
            "customer": customer,
            "crumbs": breadcrumbs(customer, user),
            "can_manage": user.has_permission(perms.CUSTOMERS_MANAGE),
            "required_above": above is not None,
            "policy_form": forms.get("policy_form")
            or TwoFactorPolicyForm(initial={"require_two_factor": customer.require_two_factor}),
            "provider": provider,
            "saml_form": forms.get("saml_form")
            or SamlProviderForm(
                actor=user,
                initial=SamlProviderForm.initial_from(provider)
                if provider
                else {"enabled": True, "slug": "", "attribute_email": "email"},
            ),
            "sp_entity_id": saml.sp_entity_id(provider) if provider else "",
            "acs_url": saml.acs_url(provider) if provider else "",
            "saml_login_url": saml.login_url(provider) if provider else "",
            "directory": directory,
            "ldap_form": forms.get("ldap_form")
            or LdapDirectoryForm(
                actor=user,
                initial=LdapDirectoryForm.initial_from(directory)
                if directory
                else {"enabled": True},
            ),
            "ldap_available": ldap_sso.AVAILABLE,
        }
        return TemplateResponse(self.request, self.template_name, context)

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return self.render(self.customer())


class _CustomerIdentityPost(CustomerIdentityView):
    permission_required = perms.CUSTOMERS_MANAGE
    http_method_names = ["post"]

    def done(self, customer: Customer, text: str) -> HttpResponse:
        messages.success(self.request, text)
        return HttpResponseRedirect(reverse("tenants:customer-identity", args=[customer.pk]))


class CustomerTwoFactorPolicyView(_CustomerIdentityPost):
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        customer = self.customer()
        form = TwoFactorPolicyForm(request.POST)
        if form.is_valid():
            try:
                ia.set_two_factor_policy(
                    actor=request.user,
                    customer=customer,
                    required=form.cleaned_data["require_two_factor"],
                )
            except (ValidationError, PermissionDenied) as exc:
                form.add_error(None, _error_list(exc))
            else:
                return self.done(customer, _("The two-factor policy is saved."))
        return self.render(customer, policy_form=form)


class CustomerSamlView(_CustomerIdentityPost):
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        customer = self.customer()
        provider = SamlIdentityProvider.objects.filter(customer=customer).first()
        form = SamlProviderForm(request.POST, actor=request.user)
        if form.is_valid():
            try:
                if provider is None:
                    ia.save_saml_provider(
                        actor=request.user, customer=customer, **form.cleaned_data
                    )
                else:
                    ia.save_saml_provider(
                        actor=request.user, provider=provider, **form.cleaned_data
                    )
            except ValidationError as exc:
                apply_validation_error(form, exc)
            except PermissionDenied as exc:
                form.add_error(None, _error_list(exc))
            else:
                return self.done(customer, _("The SAML identity provider is saved."))
        return self.render(customer, saml_form=form)


class CustomerSamlDeleteView(_CustomerIdentityPost):
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        customer = self.customer()
        provider = get_object_or_404(SamlIdentityProvider, customer=customer)
        ia.delete_saml_provider(actor=request.user, provider=provider)
        return self.done(customer, _("The SAML identity provider is removed."))


class CustomerLdapView(_CustomerIdentityPost):
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        customer = self.customer()
        directory = LdapDirectory.objects.filter(customer=customer).first()
        form = LdapDirectoryForm(request.POST, actor=request.user)
        if form.is_valid():
            data = dict(form.cleaned_data)
            if not data.get("bind_password"):
                data.pop("bind_password", None)
            try:
                if directory is None:
                    ia.save_ldap_directory(actor=request.user, customer=customer, **data)
                else:
                    ia.save_ldap_directory(actor=request.user, directory=directory, **data)
            except ValidationError as exc:
                apply_validation_error(form, exc)
            except PermissionDenied as exc:
                form.add_error(None, _error_list(exc))
            else:
                return self.done(customer, _("The LDAP directory is saved."))
        return self.render(customer, ldap_form=form)


class CustomerLdapDeleteView(_CustomerIdentityPost):
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        customer = self.customer()
        directory = get_object_or_404(LdapDirectory, customer=customer)
        ia.delete_ldap_directory(actor=request.user, directory=directory)
        return self.done(customer, _("The LDAP directory is removed."))


# ------------------------------------------------------------ another administrator's 2FA


class AdministratorResetTwoFactorView(PortalMixin, View):
    """POST: remove every second factor of an administrator one manages (audited)."""

    permission_required = perms.ADMINISTRATORS_MANAGE
    http_method_names = ["post"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        admin = scoping.get_in_scope_or_404(
            Administrator.objects.select_related("customer"), request.user, pk=kwargs["pk"]
        )
        try:
            ia.reset_two_factor(actor=request.user, admin=admin)
        except (ValidationError, PermissionDenied) as exc:
            for text in _error_list(exc):
                messages.error(request, text)
        else:
            messages.success(
                request,
                _("The second factor of “%(name)s” is reset; their sessions are signed out.")
                % {"name": admin.username},
            )
        return redirect("tenants:administrator-detail", pk=admin.pk)
