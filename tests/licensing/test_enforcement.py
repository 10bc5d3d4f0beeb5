"""Over the limit or expired, new billable objects are refused with a clear message, in the
API, the portal and the CSV import alike; everything that exists keeps working."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from licensing import actions, state
from mail import actions as mail_actions
from mail import choices, csv_import
from mail.models import Mailbox
from tenants import actions as tenant_actions
from tenants.models import Customer
from tests.fixtures import Cast, token_client
from tests.licensing.conftest import make_licence
from tests.mail.helpers import MAILBOX_PASSWORD, make_domain, make_mailbox
from tests.portal.conftest import form_errors
from ums import jobs

pytestmark = pytest.mark.django_db
ACCESS = choices.PROTOCOL_CODES


def _install(cast: Cast, **terms: Any) -> None:
    actions.install_licence(actor=cast.root_admin, text=make_licence(**terms))


def _new_mailbox_api(cast: Cast, domain: Any, local: str, **extra: Any) -> Any:
    body = {"domain": domain.pk, "localPart": local, "password": MAILBOX_PASSWORD, **extra}
    return token_client(cast.sub_admin).post(reverse("mail-mailbox-list"), body, format="json")


def test_without_a_licence_nothing_is_limited(cast: Cast) -> None:
    domain = make_domain(cast.ministry, "ministry.example")
    for n in range(3):
        make_mailbox(domain, f"user{n}")
    assert state.current().state == state.UNLICENSED


def test_users_limit_refuses_the_next_mailbox_everywhere(
    cast: Cast, login: Callable[..., Client]
) -> None:
    domain = make_domain(cast.ministry, "ministry.example")
    anna = make_mailbox(domain, "anna")
    make_mailbox(domain, "ben")
    _install(cast, model="users", limit=2)
    # API: a 400 naming the licence, nothing written.
    response = _new_mailbox_api(cast, domain, "carl")
    assert response.status_code == 400, response.content
    message = " ".join(response.json()["errors"]["licence"])
    assert "The licence allows 2 mailboxes; 2 are in use" in message
    # Portal: the same sentence on the form.
    client = login(cast.sub_admin)
    data = {"local_part": "dora", "password": MAILBOX_PASSWORD, "retention_days": 30}
    data.update({f"access_{c}": "inherit" for c in ACCESS})
    response = client.post(reverse("mail:mailbox-create", args=[domain.pk]), data)
    assert response.status_code == 200
    assert "The licence allows 2 mailboxes" in str(form_errors(response))
    assert Mailbox.objects.count() == 2
    # What exists keeps working: change, disable, more quota (not billable by users), delete.
    mail_actions.update_mailbox(actor=cast.sub_admin, mailbox=anna, display_name="Anna B")
    mail_actions.update_mailbox(actor=cast.sub_admin, mailbox=anna, quota_mb=4096)
    mail_actions.disable_mailboxes(actor=cast.sub_admin, objects=[anna])
    mail_actions.delete_mailbox(actor=cast.sub_admin, mailbox=anna)
    # A freed place can be taken again.
    assert _new_mailbox_api(cast, domain, "carl").status_code == 201


def test_storage_limit_refuses_quota_growth_but_not_shrinking(cast: Cast) -> None:
    domain = make_domain(cast.ministry, "ministry.example")
    anna = make_mailbox(domain, "anna", quota_mb=1024)
    _install(cast, model="storage_gb", limit=2)
    make_mailbox(domain, "ben", quota_mb=512)  # 1.5 GB of 2
    with pytest.raises(ValidationError) as refused:
        mail_actions.update_mailbox(actor=cast.sub_admin, mailbox=anna, quota_mb=2048)
    assert "2 GB of mailbox storage; 1.5 GB are allocated" in str(refused.value)
    response = _new_mailbox_api(cast, domain, "carl", quotaMb=1024)
    assert response.status_code == 400 and "licence" in response.json()["errors"]
    mail_actions.update_mailbox(actor=cast.sub_admin, mailbox=anna, quota_mb=512)
    assert _new_mailbox_api(cast, domain, "carl", quotaMb=1024).status_code == 201


def test_organisations_limit_refuses_the_next_customer(
    cast: Cast, login: Callable[..., Client]
) -> None:
    # The cast has five customers below the top level.
    _install(cast, model="organisations", limit=5)
    response = token_client(cast.sub_admin).post(
        reverse("customer-list"), {"name": "Agency", "parent": cast.ministry.pk}, format="json"
    )
    assert response.status_code == 400
    assert "The licence allows 5 customers; 5 are in use" in str(response.json()["errors"])
    client = login(cast.sub_admin)
    response = client.post(
        reverse("tenants:customer-create", args=[cast.ministry.pk]), {"name": "Agency"}
    )
    assert response.status_code == 200 and "The licence allows 5 customers" in str(
        form_errors(response)
    )
    assert not Customer.objects.filter(name="Agency").exists()
    # Mailboxes are not billable under this model; deleting a customer frees a place.
    make_mailbox(make_domain(cast.ministry, "ministry.example"), "anna")
    tenant_actions.delete_customer(actor=cast.root_admin, customer=cast.shop)
    tenant_actions.create_customer(actor=cast.sub_admin, name="Agency", parent=cast.ministry)


def test_after_expiry_creates_are_refused_and_the_rest_works(cast: Cast) -> None:
    domain = make_domain(cast.ministry, "ministry.example")
    anna = make_mailbox(domain, "anna")
    _install(cast, model="users", limit=1000, days=365)
    later = timezone.now() + datetime.timedelta(days=367)
    with mock.patch("django.utils.timezone.now", return_value=later):
        assert state.current().state == state.EXPIRED
        response = _new_mailbox_api(cast, domain, "ben")
        assert response.status_code == 400
        assert "The licence expired on" in " ".join(response.json()["errors"]["licence"])
        mail_actions.update_mailbox(actor=cast.sub_admin, mailbox=anna, display_name="Anna")
        mail_actions.set_mailbox_password(
            actor=cast.sub_admin, mailbox=anna, password="Copper-Willow-Tundra-84"
        )
        mail_actions.delete_mailbox(actor=cast.sub_admin, mailbox=anna)
        # Domains and aliases are not billable: they carry on.
        make_domain(cast.ministry, "second.example")
    assert not Mailbox.objects.exists()


def test_csv_import_names_each_row_beyond_the_licence(cast: Cast) -> None:
    domain = make_domain(cast.ministry, "ministry.example")
    make_mailbox(domain, "anna")
    _install(cast, model="users", limit=2)
    data = (
        "type,address,password\n"
        "mailbox,ben@ministry.example,Birch-Canyon-Delta-31\n"
        "mailbox,carl@ministry.example,Birch-Canyon-Delta-31\n"
        "mailbox,dora@ministry.example,Birch-Canyon-Delta-31\n"
    )
    report = csv_import.dry_run(data, actor=cast.sub_admin)
    rows = {e["row"]: e["errors"] for e in report["errors"]}
    assert set(rows) == {3, 4}  # ben fits; carl and dora do not
    assert "The licence allows 2 mailboxes" in " ".join(rows[3]["licence"])
    response = token_client(cast.sub_admin).post(
        reverse("mail-import-list"), {"csv": data, "dryRun": False}, format="json"
    )
    assert response.status_code == 400 and response.json()["report"]["errorCount"] == 2
    assert Mailbox.objects.count() == 1


def test_csv_apply_rechecks_the_licence_when_it_runs(cast: Cast) -> None:
    """A limit reached between the dry run and the job: the job writes nothing."""
    domain = make_domain(cast.ministry, "ministry.example")
    _install(cast, model="users", limit=2)
    data = "type,address,password\nmailbox,ben@ministry.example,Birch-Canyon-Delta-31\n"
    upload, _report = csv_import.request_import(actor=cast.sub_admin, data=data)
    make_mailbox(domain, "anna")
    make_mailbox(domain, "carl")
    with pytest.raises(jobs.PermanentJobError, match="licence"):
        csv_import.apply_import(upload, actor=cast.sub_admin)
    assert not Mailbox.objects.filter(email="ben@ministry.example").exists()
