"""Portal forms for customers, administrators, the own profile and API tokens.

Forms only validate input and offer choices; the views hand the cleaned data to
:mod:`tenants.actions`, which enforce permissions and scope. Every form takes the acting
administrator (``actor=``) so that choices (customers, grantable permissions) come from the
one scoping rule and never offer something the actor could not use.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from ums.portal.fields import CustomerChoiceField, ScopedModelChoiceField
from ums.validators import no_control_characters

from . import permissions as perms
from .models import NAME_MAX, Administrator, Customer

# The scoped pickers are re-exported: forms across the apps import them from here.
__all__ = ["ActorForm", "CustomerChoiceField", "ScopedModelChoiceField"]

DATETIME_LOCAL_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]


class PermissionsField(forms.MultipleChoiceField):
    """Permission codes as checkboxes, offering only those the actor holds."""

    widget = forms.CheckboxSelectMultiple

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("label", _("Permissions"))
        super().__init__(choices=[], **kwargs)

    def bind_actor(self, actor: Any) -> None:
        held = actor.permission_set() if actor is not None else set(perms.ALL)
        self.choices = [(code, perms.LABELS[code]) for code in perms.ALL if code in held]


class ActorForm(forms.Form):
    """A form that knows who acts and binds its scoped fields to them."""

    def __init__(self, *args: Any, actor: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.actor = actor
        for name, field in self.fields.items():
            if isinstance(field, PermissionsField | ScopedModelChoiceField):
                field.bind_actor(actor)
            if isinstance(field, ScopedModelChoiceField):
                # The chosen object stays listed even beyond the display limit.
                key = self.add_prefix(name)
                field.pinned = self.data.get(key) if self.is_bound else self.initial.get(name)

    @property
    def fields_in_error(self) -> list[forms.BoundField]:
        """The visible fields with errors, for a summary on top of a long form."""
        return [
            self[name]
            for name in self.errors
            if name in self.fields and not self.fields[name].widget.is_hidden
        ]

    def permission_groups(self) -> list[tuple[str, list[Any]]]:
        """The permission checkboxes grouped by area, in catalogue order (empty areas left out)."""
        if "permissions" not in self.fields:
            return []
        boxes = {w.data["value"]: w for w in self["permissions"].subwidgets}
        groups = []
        for area, entries in perms.CATALOGUE:
            widgets = [boxes[code] for code, _label in entries if code in boxes]
            if widgets:
                groups.append((area, widgets))
        return groups


def _name_field(label: Any, max_length: int = NAME_MAX) -> forms.CharField:
    return forms.CharField(label=label, max_length=max_length, validators=[no_control_characters])


class ConfirmForm(ActorForm):
    """An empty form: the confirmation step of a delete."""


# ------------------------------------------------------------------------------ customers


class CustomerForm(ActorForm):
    name = _name_field(_("Name"))
    notes = forms.CharField(
        label=_("Notes"),
        required=False,
        max_length=2000,
        validators=[no_control_characters],
        help_text=_("One line, up to 2000 characters."),
    )


class CustomerMoveForm(ActorForm):
    parent = CustomerChoiceField(label=_("New parent customer"))

    def __init__(self, *args: Any, customer: Customer, search: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["parent"]
        # The subtree itself and the current parent are no destination.
        field.bind_actor(
            self.actor,
            exclude=models.Q(path__startswith=customer.path) | models.Q(pk=customer.parent_id),
        )
        field.search = search
        field.pinned = self.data.get("parent") if self.is_bound else None


class CustomerSearchForm(forms.Form):
    q = forms.CharField(
        label=_("Search customers"),
        required=False,
        max_length=100,
        validators=[no_control_characters],
    )
    within = forms.IntegerField(
        required=False, min_value=1, max_value=2**63 - 1, widget=forms.HiddenInput
    )


# ------------------------------------------------------------------------- administrators


class PasswordPairMixin(forms.Form):
    password = forms.CharField(
        label=_("Password"),
        strip=False,
        max_length=4096,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=_("At least 12 characters; not a common or all-numeric password."),
    )
    password_confirm = forms.CharField(
        label=_("Repeat the password"),
        strip=False,
        max_length=4096,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def password_user(self) -> Any:
        """Whom the password is for (the similarity check compares it with their names)."""
        return None

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        first, second = data.get("password"), data.get("password_confirm")
        if first and second and first != second:
            self.add_error("password_confirm", _("The two passwords differ."))
        if first:
            # Django's validators here, beside every other field's errors, so a weak password
            # is flagged in the same round as a taken username (the action checks again).
            try:
                validate_password(first, self.password_user())
            except forms.ValidationError as exc:
                self.add_error("password", exc.messages)
        return data


class AdministratorCreateForm(PasswordPairMixin, ActorForm):
    username = forms.CharField(
        label=_("Username"),
        max_length=150,
        validators=[UnicodeUsernameValidator(), no_control_characters],
        help_text=_("Letters, digits and @ . + - _ only."),
    )
    full_name = _name_field(_("Full name"), 150)
    email = forms.EmailField(label=_("Email"), max_length=254)
    customer = CustomerChoiceField(
        label=_("Home customer"),
        help_text=_("The administrator works on this customer and everything below it."),
    )
    permissions = PermissionsField()
    is_active = forms.BooleanField(label=_("Active"), required=False, initial=True)

    field_order = [
        "username",
        "full_name",
        "email",
        "customer",
        "password",
        "password_confirm",
        "permissions",
        "is_active",
    ]

    def password_user(self) -> Administrator:
        data = self.cleaned_data
        return Administrator(
            username=data.get("username", ""),
            full_name=data.get("full_name", ""),
            email=data.get("email", ""),
        )


class AdministratorEditForm(ActorForm):
    full_name = _name_field(_("Full name"), 150)
    email = forms.EmailField(label=_("Email"), max_length=254)
    customer = CustomerChoiceField(label=_("Home customer"), empty_label=None)
    permissions = PermissionsField()
    is_active = forms.BooleanField(label=_("Active"), required=False)

    def __init__(self, *args: Any, admin: Administrator, **kwargs: Any) -> None:
        kwargs.setdefault(
            "initial",
            {
                "full_name": admin.full_name,
                "email": admin.email,
                "customer": admin.customer_id,
                "permissions": list(admin.permissions or []),
                "is_active": admin.is_active,
            },
        )
        super().__init__(*args, **kwargs)
        self.fields["customer"].pinned = (
            self.data.get("customer") if self.is_bound else admin.customer_id
        )


class AdministratorPasswordForm(PasswordPairMixin, ActorForm):
    """Set another administrator's password (the actor must be allowed to manage them)."""

    def __init__(self, *args: Any, admin: Administrator | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.admin = admin

    def password_user(self) -> Administrator | None:
        return self.admin


# ------------------------------------------------------------------------------ settings


class ProfileForm(ActorForm):
    full_name = _name_field(_("Full name"), 150)
    email = forms.EmailField(label=_("Email"), max_length=254)
    language = forms.ChoiceField(
        label=_("Language"),
        required=False,
        help_text=_("The portal uses this language after you save."),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["language"].choices = [("", _("Browser default")), *settings.LANGUAGES]
        if not self.is_bound:
            self.initial.update(
                {
                    "full_name": self.actor.full_name,
                    "email": self.actor.email,
                    "language": self.actor.language,
                }
            )


class OwnPasswordForm(PasswordPairMixin, ActorForm):
    current_password = forms.CharField(
        label=_("Current password"),
        strip=False,
        max_length=4096,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )

    field_order = ["current_password", "password", "password_confirm"]

    def password_user(self) -> Any:
        return self.actor

    def clean_current_password(self) -> str:
        value = self.cleaned_data["current_password"]
        if not self.actor.check_password(value):
            raise forms.ValidationError(_("Your current password is not correct."))
        return value


class TokenForm(ActorForm):
    name = _name_field(_("Token name"), 100)
    read_only = forms.BooleanField(
        label=_("Read-only"),
        required=False,
        help_text=_("A read-only token can look but not change anything."),
    )
    expires_at = forms.DateTimeField(
        label=_("Expires at"),
        required=False,
        input_formats=DATETIME_LOCAL_FORMATS,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text=_("Optional. Leave empty for a token that does not expire."),
    )
