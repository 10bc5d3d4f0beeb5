"""Portal forms of the mail app.

Forms check the shape of the input and offer choices scoped to the acting administrator
(customers through the portal's one picker, :class:`ums.portal.fields.CustomerChoiceField`).
They also run the action layer's own field rules (:class:`SharedRulesMixin`), so one round
trip shows every bad field; the views pass the cleaned data to :mod:`mail.actions`, whose
refusals come back as form errors too. Every form takes ``actor=``.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from tenants.forms import ActorForm, CustomerChoiceField
from ums.validators import no_control_characters

from . import actions, choices, passwords, validators
from .actions import FieldErrors


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.replace(",", "\n").splitlines() if line.strip()]


class SearchForm(forms.Form):
    q = forms.CharField(
        label=_("Search"), required=False, max_length=254, validators=[no_control_characters]
    )


class SharedRulesMixin(forms.Form):
    """Runs the action layer's own field rules in ``clean()``, so that a form invalid for one
    reason still shows what the action would refuse in the other fields (every error at
    once). Errors land only on fields that have none yet; the action checks everything
    again when the form is valid.
    """

    def shared_rules(self, data: dict[str, Any]) -> None:
        """Raise a ValidationError keyed by field for what the action would refuse."""

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        try:
            self.shared_rules(data)
        except ValidationError as exc:
            for field, messages in getattr(exc, "message_dict", {}).items():
                if field in self.fields and field not in self.errors:
                    self.add_error(field, messages)
        return data


class DomainForm(SharedRulesMixin, ActorForm):
    customer = CustomerChoiceField(label=_("Customer"))
    name = forms.CharField(
        label=_("Domain"),
        max_length=300,
        validators=[no_control_characters],
        help_text=_("Internationalised names are accepted, e.g. münchen.example."),
    )
    contact_email = forms.CharField(
        label=_("Postmaster and abuse contact"),
        max_length=254,
        required=False,
        help_text=_("Where postmaster@ and abuse@ deliver; your own address if left empty."),
    )

    def shared_rules(self, data: dict[str, Any]) -> None:
        errors = FieldErrors()
        for field, rule in (
            ("name", validators.normalise_domain),
            ("contact_email", validators.normalise_address),
            ("catch_all", validators.normalise_address),
        ):
            if data.get(field):
                with errors.check():
                    try:
                        rule(data[field])
                    except ValidationError as exc:
                        raise ValidationError({field: exc.messages}) from exc
        errors.raise_any()

    default_quota_mb = forms.IntegerField(
        label=_("Default mailbox quota (MB)"),
        min_value=1,
        max_value=choices.MAX_QUOTA_MB,
        initial=choices.DEFAULT_QUOTA_MB,
    )
    catch_all = forms.CharField(label=_("Catch-all target"), max_length=254, required=False)
    description = forms.CharField(
        label=_("Description"), max_length=200, required=False, validators=[no_control_characters]
    )


class DomainEditForm(ActorForm):
    is_enabled = forms.BooleanField(label=_("Enabled"), required=False)
    default_quota_mb = forms.IntegerField(
        label=_("Default mailbox quota (MB)"), min_value=1, max_value=choices.MAX_QUOTA_MB
    )
    catch_all = forms.CharField(label=_("Catch-all target"), max_length=254, required=False)
    description = forms.CharField(
        label=_("Description"), max_length=200, required=False, validators=[no_control_characters]
    )
    webmail_name = forms.CharField(
        label=_("Webmail name"),
        max_length=64,
        required=False,
        help_text=_("The name Roundcube shows this domain's users; the default if empty."),
    )


class DomainAliasForm(ActorForm):
    name = forms.CharField(
        label=_("Alias domain"), max_length=300, validators=[no_control_characters]
    )


class DkimForm(ActorForm):
    selector = forms.CharField(
        label=_("Selector"),
        max_length=63,
        required=False,
        help_text=_("Lowercase letters, digits and hyphens; a dated one is chosen if empty."),
    )
    bits = forms.TypedChoiceField(
        label=_("Key size"),
        choices=choices.DKIM_KEY_SIZES,
        coerce=int,
        initial=choices.DKIM_DEFAULT_BITS,
    )


class ProtocolGridMixin:
    """Protocol access as one grid: a row per protocol, inherit / allow / deny as radios.

    The grid replaces ten dropdowns that each repeated their inherited value as help text;
    the inherited value and what is in effect are shown once per row instead. Field names
    stay ``access_<code>`` so the posted data is what it always was.
    """

    #: Who "allow"/"deny" in this form belongs to, shown as the source of an override.
    level_label: Any = _("this mailbox")

    def add_protocol_fields(self, effective: dict[str, dict[str, Any]]) -> None:
        self.inherited = effective
        for code in choices.PROTOCOL_CODES:
            self.fields[f"access_{code}"] = forms.ChoiceField(  # type: ignore[attr-defined]
                label=choices.PROTOCOL_LABELS[code],
                choices=choices.ACCESS_CHOICES,
                initial=choices.INHERIT,
                widget=forms.RadioSelect,
            )

    @property
    def grid_field_names(self) -> set[str]:
        return {f"access_{code}" for code in choices.PROTOCOL_CODES}

    def protocol_rows(self) -> list[dict[str, Any]]:
        rows = []
        for code in choices.PROTOCOL_CODES:
            bound = self[f"access_{code}"]  # type: ignore[index]
            chosen = bound.value() or choices.INHERIT
            inherited = self.inherited.get(code)
            if chosen in (choices.ALLOW, choices.DENY):
                allowed, source = chosen == choices.ALLOW, None
            elif inherited is not None:
                allowed, source = inherited["allowed"], inherited["source"]
            else:
                allowed, source = choices.PROTOCOL_DEFAULTS[code], {"level": "default"}
            rows.append(
                {
                    "field": bound,
                    "radios": list(bound.subwidgets),
                    "inherited": inherited,
                    "allowed": allowed,
                    "source": source,
                    "note": choices.PROTOCOL_NOTES.get(code, ""),
                }
            )
        return rows


def protocol_data(cleaned: dict[str, Any]) -> dict[str, str]:
    return {code: cleaned[f"access_{code}"] for code in choices.PROTOCOL_CODES}


class MailboxForm(SharedRulesMixin, ProtocolGridMixin, ActorForm):
    local_part = forms.CharField(label=_("Name (before the @)"), max_length=64)
    password = forms.CharField(
        label=_("Password"),
        max_length=1024,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text=_(
            "At least 10 characters mixing letters, digits and symbols, or a passphrase of 16."
        ),
    )
    display_name = forms.CharField(
        label=_("Display name"), max_length=150, required=False, validators=[no_control_characters]
    )
    quota_mb = forms.IntegerField(
        label=_("Quota (MB)"), min_value=1, max_value=choices.MAX_QUOTA_MB, required=False
    )
    is_enabled = forms.BooleanField(label=_("Enabled"), required=False, initial=True)
    read_only = forms.BooleanField(label=_("Read-only access"), required=False)
    can_delete = forms.BooleanField(label=_("Can delete messages"), required=False, initial=True)
    can_send = forms.BooleanField(label=_("Can send"), required=False, initial=True)
    retention_days = forms.IntegerField(
        label=_("Keep deleted items (days)"),
        min_value=1,
        max_value=choices.MAX_RETENTION_DAYS,
        initial=choices.DEFAULT_RETENTION_DAYS,
    )
    forward_to = forms.CharField(
        label=_("Forward to"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=_("One address per line."),
    )
    forward_keep_copy = forms.BooleanField(
        label=_("Keep a copy when forwarding"), required=False, initial=True
    )
    hide_from_address_book = forms.BooleanField(
        label=_("Hide from the address book"), required=False
    )

    def __init__(
        self,
        *args: Any,
        effective: dict[str, Any] | None = None,
        domain: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.domain = domain
        self.domain_name = domain.name if domain is not None else ""
        self.add_protocol_fields(effective or {})

    # The form checks the shape of every field itself, so that a bad name does not hide a
    # weak password until the next round trip; the action checks the same again.
    def clean_local_part(self) -> str:
        try:
            return validators.normalise_local_part(self.cleaned_data["local_part"])
        except ValidationError as exc:
            raise forms.ValidationError(exc.messages) from exc

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        local = str(self.data.get(self.add_prefix("local_part"), "")).strip().lower()
        try:
            passwords.check_password(password, local_part=local, domain=self.domain_name)
        except ValidationError as exc:
            raise forms.ValidationError(exc.messages) from exc
        return password

    def shared_rules(self, data: dict[str, Any]) -> None:
        fields = {k: data[k] for k in ("display_name", "retention_days") if k in data}
        if "forward_to" in data:
            fields["forward_to"] = _lines(data["forward_to"] or "")
        local = data.get("local_part") or ""
        errors = FieldErrors()
        with errors.check():
            actions.clean_mailbox_fields(fields, email=f"{local}@{self.domain_name}")
        if local and self.domain is not None:
            with errors.check():
                actions.check_address_free(self.domain, local)
        errors.raise_any()

    def action_fields(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data["forward_to"] = _lines(data.get("forward_to") or "")
        data["protocol_access"] = protocol_data(data)
        for code in choices.PROTOCOL_CODES:
            data.pop(f"access_{code}")
        if data.get("quota_mb") is None:
            data.pop("quota_mb", None)
        return data


class MailboxEditForm(MailboxForm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        del self.fields["local_part"]
        del self.fields["password"]
        self.fields["quota_mb"].required = True


class PasswordForm(ActorForm):
    password = forms.CharField(
        label=_("New password"),
        max_length=1024,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=MailboxForm.base_fields["password"].help_text,
    )

    def __init__(self, *args: Any, local_part: str = "", domain_name: str = "", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.local_part, self.domain_name = local_part, domain_name

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        try:
            passwords.check_password(password, local_part=self.local_part, domain=self.domain_name)
        except ValidationError as exc:
            raise forms.ValidationError(exc.messages) from exc
        return password


class WebmailTwoFactorForm(ActorForm):
    operation = forms.ChoiceField(
        label=_("Webmail login"),
        choices=[
            ("enable", _("Password and a one-time code (a new seed replaces any earlier one)")),
            ("disable", _("Password only")),
        ],
        widget=forms.RadioSelect,
    )


class AliasForm(SharedRulesMixin, ActorForm):
    local_part = forms.CharField(label=_("Name (before the @)"), max_length=64)
    kind = forms.ChoiceField(label=_("Kind"), choices=choices.ALIAS_KINDS)
    name = forms.CharField(
        label=_("Display name"), max_length=150, required=False, validators=[no_control_characters]
    )
    targets = forms.CharField(
        label=_("Delivers to"),
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_("One address per line, inside or outside your domains."),
    )
    is_enabled = forms.BooleanField(label=_("Enabled"), required=False, initial=True)
    hide_from_address_book = forms.BooleanField(
        label=_("Hide from the address book"), required=False
    )

    def __init__(self, *args: Any, domain: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.domain = domain
        self.domain_name = domain.name if domain is not None else ""

    def shared_rules(self, data: dict[str, Any]) -> None:
        fields = {k: data[k] for k in ("kind", "name") if k in data}
        if "targets" in data:
            fields["targets"] = _lines(data["targets"])
        local = data.get("local_part") or ""
        errors = FieldErrors()
        with errors.check():
            actions.clean_alias_fields(fields, email=f"{local}@{self.domain_name}")
        if local and self.domain is not None:
            with errors.check():
                actions.check_address_free(self.domain, local)
        errors.raise_any()

    def clean_local_part(self) -> str:
        try:
            return validators.normalise_local_part(self.cleaned_data["local_part"])
        except ValidationError as exc:
            raise forms.ValidationError(exc.messages) from exc

    def action_fields(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data["targets"] = _lines(data["targets"])
        return data


class AliasEditForm(AliasForm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        del self.fields["local_part"]


class AutoResponderForm(ActorForm):
    is_enabled = forms.BooleanField(label=_("Enabled"), required=False)
    subject = forms.CharField(
        label=_("Subject"), max_length=200, required=False, validators=[no_control_characters]
    )
    body = forms.CharField(
        label=_("Message"), max_length=10000, required=False, widget=forms.Textarea, strip=False
    )
    start_date = forms.DateField(
        label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    end_date = forms.DateField(
        label=_("Until"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    interval_days = forms.IntegerField(
        label=_("Reply to the same sender at most every (days)"),
        min_value=1,
        max_value=365,
        initial=7,
    )


RULE_FIELDS = [
    ("from", pgettext_lazy("mail sender", "From")),
    ("to", _("To or Cc")),
    ("subject", _("Subject")),
    ("header", _("Header")),
    ("size", _("Size")),
]
RULE_OPS = [
    ("contains", _("contains")),
    ("is", _("is")),
    ("matches", _("matches (wildcards)")),
    ("over", _("is over (size)")),
    ("under", _("is under (size)")),
]
RULE_ACTIONS = [
    ("fileinto", _("File into folder")),
    ("redirect", _("Redirect to")),
    ("discard", _("Discard")),
    ("mark_read", _("Mark as read")),
    ("stop", _("Stop processing")),
]


class SieveRuleForm(ActorForm):
    """One rule of the rule editor: a condition, an action, optionally stop afterwards."""

    name = forms.CharField(label=_("Rule name"), max_length=100, required=False)
    field = forms.ChoiceField(label=_("When"), choices=RULE_FIELDS)
    header = forms.CharField(label=_("Header name (for Header)"), max_length=76, required=False)
    op = forms.ChoiceField(label=_("Condition"), choices=RULE_OPS)
    value = forms.CharField(label=_("Value"), max_length=500)
    action = forms.ChoiceField(label=_("Then"), choices=RULE_ACTIONS)
    argument = forms.CharField(label=_("Folder or address"), max_length=254, required=False)
    stop = forms.BooleanField(label=_("Stop after this rule"), required=False)

    def rule(self) -> dict[str, Any]:
        data = self.cleaned_data
        condition: dict[str, Any] = {
            "field": data["field"],
            "op": data["op"],
            "value": data["value"],
        }
        if data["field"] == "header":
            condition["header"] = data["header"]
        act: dict[str, Any] = {"type": data["action"]}
        if data["action"] == "fileinto":
            act["folder"] = data["argument"]
        elif data["action"] == "redirect":
            act["address"] = data["argument"]
        actions_list = [act]
        if data["stop"] and data["action"] != "stop":
            actions_list.append({"type": "stop"})
        return {
            "name": data["name"],
            "match": "all",
            "conditions": [condition],
            "actions": actions_list,
        }


class SieveRawForm(ActorForm):
    name = forms.CharField(label=_("Filter name"), max_length=100)
    script = forms.CharField(
        label=_("Sieve script"),
        max_length=65536,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 16, "spellcheck": "false"}),
    )
    is_active = forms.BooleanField(label=_("Active"), required=False, initial=True)


INHERIT_CHOICE = [("", _("Inherit")), ("on", _("On")), ("off", _("Off"))]


class PolicyForm(ProtocolGridMixin, ActorForm):
    """Protocol access and filtering policy of a customer or domain."""

    override_blocked_extensions = forms.BooleanField(
        label=_("Set blocked extensions here"), required=False
    )
    blocked_extensions = forms.CharField(
        label=_("Blocked extensions"), required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    override_blocked_mime_types = forms.BooleanField(
        label=_("Set blocked MIME types here"), required=False
    )
    blocked_mime_types = forms.CharField(
        label=_("Blocked MIME types"), required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    spam_tag_score = forms.DecimalField(
        label=_("Spam tag score"), required=False, max_digits=4, decimal_places=1, min_value=0,
        max_value=100,
    )  # fmt: skip
    spam_hold_score = forms.DecimalField(
        label=_("Spam hold score"), required=False, max_digits=4, decimal_places=1, min_value=0,
        max_value=100,
    )  # fmt: skip
    spam_reject_score = forms.DecimalField(
        label=_("Spam reject score"), required=False, max_digits=4, decimal_places=1,
        min_value=0, max_value=100,
    )  # fmt: skip
    antivirus = forms.ChoiceField(label=_("Anti-virus"), choices=INHERIT_CHOICE, required=False)
    greylisting = forms.ChoiceField(label=_("Greylisting"), choices=INHERIT_CHOICE, required=False)
    dmarc_failure = forms.ChoiceField(
        label=_("On DMARC failure"),
        choices=[("", _("Inherit")), *choices.DMARC_FAILURE_CHOICES],
        required=False,
        help_text=_(
            "Inbound mail whose From domain fails DMARC (SPF and DKIM both unaligned). "
            "Mail is always delivered when DNS cannot answer."
        ),
    )
    override_sender_allow = forms.BooleanField(label=_("Set allowed senders here"), required=False)
    sender_allow = forms.CharField(
        label=_("Allowed senders"), required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    override_sender_block = forms.BooleanField(label=_("Set blocked senders here"), required=False)
    sender_block = forms.CharField(
        label=_("Blocked senders"), required=False, widget=forms.Textarea(attrs={"rows": 3})
    )

    def __init__(
        self,
        *args: Any,
        effective: dict[str, Any] | None = None,
        level_label: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if level_label is not None:
            self.level_label = level_label
        self.add_protocol_fields(effective or {})

    @staticmethod
    def initial_for(row: Any) -> dict[str, Any]:
        initial: dict[str, Any] = {}
        own = (row.protocol_access or {}) if row is not None else {}
        for code in choices.PROTOCOL_CODES:
            initial[f"access_{code}"] = own.get(code, choices.INHERIT)
        if row is None:
            return initial
        for field in ("blocked_extensions", "blocked_mime_types", "sender_allow", "sender_block"):
            value = getattr(row, field)
            initial[f"override_{field}"] = value is not None
            initial[field] = "\n".join(value or [])
        for field in ("spam_tag_score", "spam_hold_score", "spam_reject_score"):
            initial[field] = getattr(row, field)
        for field in ("antivirus", "greylisting"):
            value = getattr(row, field)
            initial[field] = "" if value is None else ("on" if value else "off")
        initial["dmarc_failure"] = row.dmarc_failure or ""
        return initial

    def action_fields(self) -> dict[str, Any]:
        data = self.cleaned_data
        out: dict[str, Any] = {"protocol_access": protocol_data(data)}
        for field in ("blocked_extensions", "blocked_mime_types", "sender_allow", "sender_block"):
            out[field] = _lines(data[field]) if data[f"override_{field}"] else None
        for field in ("spam_tag_score", "spam_hold_score", "spam_reject_score"):
            out[field] = data[field]
        for field in ("antivirus", "greylisting"):
            out[field] = {"": None, "on": True, "off": False}[data[field] or ""]
        out["dmarc_failure"] = data["dmarc_failure"] or None
        return out


class LimitForm(ActorForm):
    max_domains = forms.IntegerField(
        label=_("Maximum domains"), required=False, min_value=0, max_value=2_000_000_000
    )
    max_mailboxes = forms.IntegerField(
        label=_("Maximum mailboxes"), required=False, min_value=0, max_value=2_000_000_000
    )
    max_aliases = forms.IntegerField(
        label=_("Maximum aliases"), required=False, min_value=0, max_value=2_000_000_000
    )
    max_quota_gb = forms.IntegerField(
        label=_("Maximum total quota (GB)"), required=False, min_value=0, max_value=2_000_000_000
    )
    max_cloud_gb = forms.IntegerField(
        label=_("Maximum cloud files (GB)"), required=False, min_value=0, max_value=2_000_000_000
    )
    max_chat_users = forms.IntegerField(
        label=_("Maximum chat users"), required=False, min_value=0, max_value=2_000_000_000
    )


class CsvImportForm(ActorForm):
    file = forms.FileField(
        label=_("CSV file"),
        help_text=_("Columns: type, address, display_name, password, quota_mb, targets, enabled."),
    )
