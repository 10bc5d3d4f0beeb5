"""``manage.py createadmin``: the production first run, from flags and the environment."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditRecord
from tenants import permissions as perms
from tenants.models import Administrator, Customer

STRONG = "Juniper-Anvil-Solstice-58"
FLAGS = ["--customer", "Operator", "--username", "root.admin", "--email", "ops@example.org"]


@pytest.mark.django_db
def test_creates_root_customer_and_administrator_with_every_permission(monkeypatch) -> None:
    monkeypatch.setenv("UMS_ADMIN_PASSWORD", STRONG)
    call_command("createadmin", *FLAGS, "--no-input")
    admin = Administrator.objects.get(username="root.admin")
    assert admin.customer.parent is None and admin.customer.name == "Operator"
    assert set(admin.permissions) == set(perms.ALL)
    assert admin.check_password(STRONG)
    assert AuditRecord.objects.filter(action="administrator.create", channel="cli").exists()


@pytest.mark.django_db
def test_everything_can_come_from_the_environment(monkeypatch) -> None:
    for name, value in {
        "UMS_ADMIN_CUSTOMER": "Operator",
        "UMS_ADMIN_USERNAME": "env.admin",
        "UMS_ADMIN_EMAIL": "env@example.org",
        "UMS_ADMIN_PASSWORD": STRONG,
    }.items():
        monkeypatch.setenv(name, value)
    call_command("createadmin", "--no-input")
    assert Administrator.objects.get(username="env.admin").customer.name == "Operator"


@pytest.mark.django_db
def test_a_weak_password_is_refused_with_the_validators_messages(monkeypatch) -> None:
    monkeypatch.setenv("UMS_ADMIN_PASSWORD", "password")
    with pytest.raises(CommandError) as caught:
        call_command("createadmin", *FLAGS, "--no-input")
    message = str(caught.value)
    assert "too short" in message and "too common" in message
    assert not Customer.objects.exists() and not Administrator.objects.exists()


@pytest.mark.django_db
def test_an_existing_username_is_an_error_that_changes_nothing(monkeypatch) -> None:
    monkeypatch.setenv("UMS_ADMIN_PASSWORD", STRONG)
    call_command("createadmin", *FLAGS, "--no-input")
    monkeypatch.setenv("UMS_ADMIN_PASSWORD", "Other-Harbour-Lantern-91")
    with pytest.raises(CommandError, match="already exists"):
        call_command("createadmin", *FLAGS, "--no-input")
    assert Administrator.objects.get(username="root.admin").check_password(STRONG)
    assert Customer.objects.count() == 1


@pytest.mark.django_db
def test_missing_values_are_named_without_prompting(monkeypatch) -> None:
    monkeypatch.delenv("UMS_ADMIN_USERNAME", raising=False)
    with pytest.raises(CommandError, match="UMS_ADMIN_USERNAME"):
        call_command("createadmin", "--customer", "Operator", "--no-input")
