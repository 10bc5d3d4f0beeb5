"""Portal forms outside mail: every field's error at once, weak passwords flagged, and the
one indented customer picker on every form that chooses a customer."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

from audit.models import AuditRecord
from servers.forms import ZoneForm
from spamhold.forms import QueueFilterForm
from tenants.forms import AdministratorCreateForm, CustomerChoiceField, CustomerMoveForm
from tenants.models import Administrator
from tests.fixtures import Cast
from tests.portal.conftest import form_errors
from ums.portal.generic import ConfirmForm, add_errors

pytestmark = pytest.mark.django_db


def test_administrator_create_flags_a_weak_password_beside_other_errors(
    cast: Cast, login: Any
) -> None:
    """Issue 11: administrator create did not flag a weak password."""
    client = login(cast.sub_admin)
    before = (Administrator.objects.count(), AuditRecord.objects.count())
    response = client.post(
        reverse("tenants:administrator-create"),
        {
            "username": "sub.admin",  # taken
            "full_name": "",
            "email": "not-an-email",
            "customer": cast.ministry.pk,
            "password": "password123",  # common
            "password_confirm": "password123",
            "is_active": "on",
        },
    )
    assert response.status_code == 200
    errors = form_errors(response)
    assert {"full_name", "email", "password"} <= set(errors), errors
    assert "too common" in " ".join(errors["password"])
    assert (Administrator.objects.count(), AuditRecord.objects.count()) == before


def test_password_similar_to_the_username_is_flagged(cast: Cast) -> None:
    form = AdministratorCreateForm(
        {
            "username": "harbourmaster",
            "full_name": "Harbour Master",
            "email": "harbourmaster@example.org",
            "customer": cast.ministry.pk,
            "password": "harbourmaster1",
            "password_confirm": "harbourmaster1",
        },
        actor=cast.sub_admin,
    )
    assert not form.is_valid()
    assert "too similar" in " ".join(form.errors["password"])


def test_add_errors_puts_every_field_of_an_action_refusal_on_the_form(cast: Cast) -> None:
    form = ZoneForm({"name": "z"}, actor=cast.root_admin)
    form.is_valid()
    add_errors(
        form,
        ValidationError(
            {
                "name": ["Taken."],
                "location": ["Too far."],
                "not_a_field": ["Refused."],
                "__all__": ["Nothing changed."],
            }
        ),
    )
    assert form.errors["name"][-1] == "Taken."
    assert form.errors["location"] == ["Too far."]
    assert "not a field: Refused." in form.non_field_errors()
    assert "Nothing changed." in form.non_field_errors()
    confirm = ConfirmForm({}, actor=cast.root_admin)
    confirm.is_valid()
    add_errors(confirm, PermissionDenied("No."))
    assert confirm.non_field_errors() == ["No."]


def _labels(field: Any) -> list[str]:
    return [label for value, label in field.choices if value != ""]


def test_every_customer_choice_is_the_same_indented_scoped_picker(cast: Cast) -> None:
    """Mail domains, zones, administrators, moves and the spam hold filter share one picker."""
    from mail.forms import DomainForm

    forms = {
        "domain": DomainForm(actor=cast.sub_admin).fields["customer"],
        "zone": ZoneForm(actor=cast.sub_admin).fields["customer"],
        "admin": AdministratorCreateForm(actor=cast.sub_admin).fields["customer"],
        "move": CustomerMoveForm(actor=cast.sub_admin, customer=cast.department).fields["parent"],
        "spamhold": QueueFilterForm(actor=cast.sub_admin).fields["customer"],
    }
    for name, field in forms.items():
        assert isinstance(field, CustomerChoiceField), name
        labels = _labels(field)
        # Scoped: Government's subtree only; indented by depth below the actor's customer.
        assert "Provider" not in " ".join(labels) and "Shop" not in " ".join(labels), name
        if name != "move":
            assert labels[:3] == ["Government", "— Ministry", "— — Department"], (name, labels)


def test_customer_outside_scope_is_refused_by_the_picker(cast: Cast) -> None:
    from mail.forms import DomainForm

    form = DomainForm(
        {"customer": cast.shop.pk, "name": "shop.example", "default_quota_mb": 100},
        actor=cast.sub_admin,
    )
    assert not form.is_valid()
    assert "customer" in form.errors


@pytest.mark.parametrize("value", ["99999999999999999999999", "-1", "abc", "1.5", "\x00"])
def test_absurd_customer_values_are_form_errors_not_500s(cast: Cast, value: str) -> None:
    from mail.forms import DomainForm

    spam = QueueFilterForm({"customer": value}, actor=cast.sub_admin)
    assert not spam.is_valid() and "customer" in spam.errors
    domain = DomainForm(
        {"customer": value, "name": "x.example", "default_quota_mb": 5}, actor=cast.sub_admin
    )
    assert not domain.is_valid() and "customer" in domain.errors
