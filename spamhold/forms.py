"""Portal forms of the spam hold: the queue's filters and the action (release/delete) form.

The filter form yields the same plain filters dict as the API (``spamhold.query``), so the
portal's "everything matching the filter" starts exactly the bulk job the API would.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from servers.models import Node
from ums import scoping
from ums.portal.fields import CustomerChoiceField
from ums.validators import no_control_characters

from .models import Outcome, Reason, Status
from .query import FILTER_KEYS, MAX_ID, normalise_domain

DATETIME_LOCAL_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
CHOICES_LIMIT = 500
ANY_STATUS = "any"
# Ticked rows per action: at most a few pages; more goes through "everything matching".
MAX_SELECTED = 500


def _datetime_field(label: Any) -> forms.DateTimeField:
    return forms.DateTimeField(
        label=label,
        required=False,
        input_formats=DATETIME_LOCAL_FORMATS,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )


def _text_field(label: Any, max_length: int, **attrs: Any) -> forms.CharField:
    return forms.CharField(
        label=label,
        required=False,
        max_length=max_length,
        validators=[no_control_characters],
        widget=forms.TextInput(attrs=attrs),
    )


class QueueFilterForm(forms.Form):
    """The queue's filters (GET). Status defaults to "on hold"; "any" shows every status."""

    status = forms.ChoiceField(
        label=_("Status"),
        required=False,
        choices=[*Status.choices, (ANY_STATUS, _("Any status"))],
    )
    reason = forms.ChoiceField(
        label=_("Reason"), required=False, choices=[("", _("Any reason")), *Reason.choices]
    )
    from_domain = _text_field(_("Sender domain"), 255, placeholder="gmail.com")
    from_email = _text_field(_("Sender address"), 320)
    to_domain = _text_field(_("Recipient domain"), 255)
    to_email = _text_field(_("Recipient address"), 320)
    subject = _text_field(_("Subject contains"), 200)
    since = _datetime_field(_("Received from"))
    until = _datetime_field(_("Received until"))
    node = forms.CharField(label=_("Node"), required=False, widget=forms.Select)
    # The portal's one customer picker; its list is read only when the form is rendered.
    customer = CustomerChoiceField(
        label=_("Customer subtree"),
        required=False,
        empty_label=_("All customers in my scope"),
        display_limit=CHOICES_LIMIT,
        error_messages={"invalid_choice": _("Choose an entry from the list.")},
    )

    def __init__(self, *args: Any, actor: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.actor = actor
        customer = self.fields["customer"]
        customer.bind_actor(actor)
        customer.pinned = self.data.get("customer") if self.is_bound else None
        self.nodes = scoping.scope_queryset(Node.objects.order_by("hostname"), actor)

    def load_choices(self) -> None:
        """Fill the node list (one query; only pages showing the form)."""
        nodes = list(self.nodes.only("id", "hostname")[:CHOICES_LIMIT])
        self.fields["node"].widget.choices = [
            ("", _("All nodes")),
            *[(str(n.pk), n.hostname) for n in nodes],
        ]

    def _id_in(self, name: str, queryset: Any) -> Any:
        value = (self.cleaned_data.get(name) or "").strip()
        if not value:
            return None
        found = None
        if value.isdigit() and 0 < int(value) <= MAX_ID:
            found = queryset.filter(pk=int(value)).first()
        if found is None:
            raise forms.ValidationError(_("Choose an entry from the list."))
        return found

    def clean_node(self) -> Any:
        return self._id_in("node", self.nodes)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and until < since:
            self.add_error("until", _("“Received until” must not be before “Received from”."))
        return data

    def to_filters(self) -> tuple[dict[str, Any], str | None]:
        """The plain filters for ``spamhold.query.apply_filters`` (valid form only)."""
        data = self.cleaned_data
        filters: dict[str, Any] = {}
        status = data.get("status") or Status.ONHOLD
        if status != ANY_STATUS:
            filters["status"] = status
        if data.get("reason"):
            filters["reason"] = data["reason"]
        for key in ("from_domain", "to_domain"):
            value = normalise_domain(data.get(key) or "")
            if value:
                filters[key] = value
        for key in ("from_email", "to_email", "subject"):
            value = (data.get(key) or "").strip()
            if value:
                filters[key] = value
        if data.get("since"):
            filters["start_time"] = data["since"].timestamp()
        if data.get("until"):
            # The minute shown includes its seconds.
            filters["end_time"] = data["until"].timestamp() + 59.999
        path = None
        if data.get("node") is not None:
            filters["node"] = data["node"].pk
        if data.get("customer") is not None:
            filters["customer"] = data["customer"].pk
            path = data["customer"].path
        assert set(filters) <= set(FILTER_KEYS)
        return filters, path


class ActionForm(forms.Form):
    """A release/delete request from the queue or a message page (POST)."""

    outcome = forms.ChoiceField(
        choices=[
            (Outcome.RELEASE, _("Release")),
            (Outcome.RELEASE_ALLOW, _("Release and allow the sender")),
            (Outcome.DELETE, _("Delete")),
            (Outcome.DELETE_BLOCK, _("Delete and block the sender")),
        ]
    )
    ids = forms.TypedMultipleChoiceField(required=False, coerce=int)
    all_matching = forms.BooleanField(required=False)
    confirmed = forms.BooleanField(required=False)
    next = forms.CharField(required=False, max_length=2000)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Any id shape is accepted here; scoping decides what exists (outside is ignored).
        raw = self.data.getlist("ids") if hasattr(self.data, "getlist") else []
        self.fields["ids"].choices = [
            (v, v) for v in raw if isinstance(v, str) and v.isdigit() and 0 < int(v) <= MAX_ID
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        ids = data.get("ids") or []
        if len(ids) > MAX_SELECTED:
            raise forms.ValidationError(
                _("Select at most %(n)d messages, or use “everything matching the filter”.")
                % {"n": MAX_SELECTED}
            )
        if not ids and not data.get("all_matching"):
            raise forms.ValidationError(_("Select at least one message."))
        return data
