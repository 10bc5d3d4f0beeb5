"""Portal forms for second factors, the two-factor policy, and SAML / LDAP settings.

As elsewhere, forms only parse input; :mod:`tenants.identity_actions` validates and decides.
Lists (domains, group mappings) are typed as text and parsed here into what the actions take.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from ums.validators import no_control_characters

from .forms import ActorForm, PermissionsField
from .models_identity import LdapDirectory, SamlIdentityProvider


class SecondFactorForm(forms.Form):
    code = forms.CharField(
        label=_("Code"),
        max_length=64,
        strip=True,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "autocapitalize": "off", "spellcheck": "false"}
        ),
        help_text=_("The 6-digit code from your authenticator app, or one of your recovery codes."),
    )


class TotpConfirmForm(forms.Form):
    code = forms.CharField(
        label=_("Code from the app"),
        max_length=16,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
        help_text=_("Enter the 6-digit code the app shows now, to confirm it is set up."),
    )


class TwoFactorPolicyForm(forms.Form):
    require_two_factor = forms.BooleanField(
        label=_("Require two-factor authentication"),
        required=False,
        help_text=_(
            "Every administrator of this customer and of all customers below it must use an "
            "authenticator app or a security key."
        ),
    )


def _split_list(value: str) -> list[str]:
    return [
        part.strip()
        for part in value.replace(";", ",").replace("\n", ",").split(",")
        if part.strip()
    ]


class DomainListField(forms.CharField):
    """Domains typed as "a.example, b.example"; checked by the action."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 2000)
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return ", ".join(value)
        return value

    def to_python(self, value: Any) -> list[str]:
        return _split_list(super().to_python(value) or "")


class SamlProviderForm(ActorForm):
    slug = forms.SlugField(
        label=_("Sign-in name"),
        max_length=60,
        help_text=_(
            "Lower-case letters, digits and hyphens; the sign-in address is "
            "/sso/saml/<name>/login/."
        ),
    )
    enabled = forms.BooleanField(label=_("Enabled"), required=False, initial=True)
    entity_id = forms.CharField(
        label=_("IdP entity id"), max_length=500, validators=[no_control_characters]
    )
    sso_url = forms.URLField(
        label=_("IdP single sign-on URL"), max_length=1000, assume_scheme="https"
    )
    x509_cert = forms.CharField(
        label=_("IdP signing certificate"),
        max_length=20000,
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false"}),
        help_text=_("PEM; responses must be signed with its key."),
    )
    email_domains = DomainListField(
        label=_("Email domains"),
        help_text=_(
            "Comma-separated. Users signing in with an address in these domains are sent to "
            "this provider, and the provider may only sign in addresses in them."
        ),
    )
    attribute_email = forms.CharField(
        label=_("Email attribute"),
        max_length=200,
        required=False,
        help_text=_("Leave empty to use the NameID when it is an address."),
    )
    attribute_full_name = forms.CharField(
        label=_("Full name attribute"), max_length=200, required=False
    )
    allow_jit = forms.BooleanField(
        label=_("Create administrators on first sign-in"),
        required=False,
        help_text=_(
            "Unknown users become administrators of this customer with the permissions below."
        ),
    )
    jit_permissions = PermissionsField(label=_("Permissions of created administrators"))
    enforces_mfa = forms.BooleanField(
        label=_("The identity provider enforces multi-factor authentication"),
        required=False,
        help_text=_(
            "When set, a SAML sign-in counts as two-factor; otherwise the portal asks for its "
            "own second factor where one is required or set up."
        ),
    )

    @classmethod
    def initial_from(cls, provider: SamlIdentityProvider) -> dict[str, Any]:
        return {name: getattr(provider, name) for name in cls.base_fields}


class GroupMappingField(forms.CharField):
    """One mapping per line: ``<group DN> | <permission> <permission> ...``."""

    widget = forms.Textarea(attrs={"rows": 4, "spellcheck": "false"})

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 20000)
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return "\n".join(
                f"{entry.get('group', '')} | {' '.join(entry.get('permissions') or [])}"
                for entry in value
            )
        return value

    def to_python(self, value: Any) -> list[dict[str, Any]]:
        text = super().to_python(value) or ""
        mappings = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            if "|" not in line:
                raise forms.ValidationError(
                    _("Line %(n)d: write the group DN, a | and the permissions.") % {"n": number}
                )
            group, codes = line.split("|", 1)
            mappings.append(
                {
                    "group": group.strip(),
                    "permissions": [c for c in codes.replace(",", " ").split() if c],
                }
            )
        return mappings


class LdapDirectoryForm(ActorForm):
    enabled = forms.BooleanField(label=_("Enabled"), required=False, initial=True)
    server_uri = forms.CharField(
        label=_("Directory URL"),
        max_length=500,
        help_text=_(
            "ldaps://host:636, or ldap://host:389 with StartTLS. Unencrypted LDAP is refused."
        ),
    )
    start_tls = forms.BooleanField(label=_("Use StartTLS"), required=False)
    ca_certificate = forms.CharField(
        label=_("CA certificate"),
        required=False,
        max_length=50000,
        widget=forms.Textarea(attrs={"rows": 5, "spellcheck": "false"}),
        help_text=_(
            "PEM of the CA that signed the directory's certificate; empty for the system CAs."
        ),
    )
    bind_dn = forms.CharField(label=_("Bind DN"), max_length=500, required=False)
    bind_password = forms.CharField(
        label=_("Bind password"),
        required=False,
        max_length=1000,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}, render_value=False),
        help_text=_("Stored encrypted and never shown. Leave empty to keep the current one."),
    )
    user_search_base = forms.CharField(label=_("User search base"), max_length=500)
    user_search_filter = forms.CharField(
        label=_("User search filter"), max_length=500, initial="(uid=%(user)s)"
    )
    group_search_base = forms.CharField(
        label=_("Group search base"), max_length=500, required=False
    )
    group_type = forms.ChoiceField(label=_("Group type"), choices=LdapDirectory.GROUP_TYPES)
    group_permissions = GroupMappingField(
        label=_("Group permissions"),
        help_text=_(
            "One per line: group DN | permission codes. Permissions follow the groups at "
            "every login."
        ),
    )
    attribute_full_name = forms.CharField(
        label=_("Full name attribute"), max_length=100, initial="cn"
    )
    attribute_email = forms.CharField(label=_("Email attribute"), max_length=100, initial="mail")
    login_domains = DomainListField(
        label=_("Login domains"),
        required=True,
        help_text=_("Comma-separated. Directory users sign in as name@domain."),
    )

    @classmethod
    def initial_from(cls, directory: LdapDirectory) -> dict[str, Any]:
        return {
            name: getattr(directory, name) for name in cls.base_fields if name != "bind_password"
        }
