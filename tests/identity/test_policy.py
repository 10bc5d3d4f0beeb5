"""The two-factor policy: inherited down the tree, only stricter below, enforced before
anything else; resetting another administrator's second factor within scope only."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.http import Http404
from django.test import Client
from django.urls import reverse

from audit.models import AuditRecord
from tenants import identity_actions as ia
from tenants.models_identity import RecoveryCode, SessionRecord, TotpDevice
from tenants.twofactor import policy
from tests.fixtures import Cast, token_client
from tests.identity.conftest import (
    challenge,
    code_for,
    enrol_totp,
    is_fully_in,
    password_login,
)

pytestmark = pytest.mark.django_db


def test_policy_is_inherited_by_every_administrator_below(cast: Cast) -> None:
    ia.set_two_factor_policy(actor=cast.root_admin, customer=cast.government, required=True)
    assert policy.two_factor_required(cast.sub_admin)
    assert policy.two_factor_required(cast.ministry_viewer)  # two levels below
    assert not policy.two_factor_required(cast.sibling_admin)  # the ISP branch
    assert not policy.two_factor_required(cast.root_admin)  # above
    record = AuditRecord.objects.filter(action="customer.two_factor_policy").latest("seq")
    assert record.changes["after"] == {"require_two_factor": True}
    assert record.actor_id == cast.root_admin.pk


def test_policy_can_only_get_stricter_downward(cast: Cast) -> None:
    ia.set_two_factor_policy(actor=cast.root_admin, customer=cast.government, required=True)
    # Below a requiring customer it cannot be lifted (nor is there anything to lift).
    ia.set_two_factor_policy(actor=cast.sub_admin, customer=cast.ministry, required=True)
    with pytest.raises(ValidationError):
        ia.set_two_factor_policy(actor=cast.sub_admin, customer=cast.ministry, required=False)
    # The Government administrator cannot lift what their superiors set on their home.
    with pytest.raises(ValidationError):
        ia.set_two_factor_policy(actor=cast.sub_admin, customer=cast.government, required=False)
    # Nobody outside the subtree can touch it.
    with pytest.raises(Http404):
        ia.set_two_factor_policy(actor=cast.sibling_admin, customer=cast.government, required=False)
    cast.government.refresh_from_db()
    assert cast.government.require_two_factor
    # The superior can.
    ia.set_two_factor_policy(actor=cast.root_admin, customer=cast.government, required=False)
    cast.government.refresh_from_db()
    assert not cast.government.require_two_factor


def test_administrator_who_must_enrol_is_sent_to_enrolment_before_anything(cast: Cast) -> None:
    ia.set_two_factor_policy(actor=cast.root_admin, customer=cast.government, required=True)
    client = Client()
    response = password_login(client, "sub.admin", next="/customers/")
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("tenants:two-factor"))
    for url in ("/customers/", "/audit/", reverse("tenants:settings"), "/mail/"):
        held = client.get(url)
        assert held.status_code == 302, url
        assert held["Location"].startswith(reverse("tenants:two-factor")), url
    # API calls on this session are refused with a clear message.
    api = client.get("/api/v1/customers/")
    assert api.status_code == 401
    assert "two-factor" in api.json()["message"]
    # Enrolment itself is reachable, and completing it opens the portal.
    assert client.get(reverse("tenants:two-factor")).status_code == 200
    assert client.get(reverse("tenants:totp-enrol")).status_code == 200
    secret = TotpDevice.objects.get(owner=cast.sub_admin).secret
    done = client.post(reverse("tenants:totp-enrol"), {"code": code_for(secret)})
    assert done.status_code == 200
    assert is_fully_in(client)


def test_policy_set_later_reaches_sessions_already_open(cast: Cast) -> None:
    client = Client()
    password_login(client, "ministry.viewer")
    assert is_fully_in(client)
    ia.set_two_factor_policy(actor=cast.root_admin, customer=cast.government, required=True)
    # The session rechecks within a minute; simulate the minute passing.
    session = client.session
    session["_ums_2fa_none"] -= 120
    session.save()
    held = client.get(reverse("tenants:settings"))
    assert held.status_code == 302
    assert held["Location"].startswith(reverse("tenants:two-factor"))


def test_tokens_of_an_owner_who_must_enrol_stop_working(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    assert client.get("/api/v1/customers/").status_code == 200
    ia.set_two_factor_policy(actor=cast.root_admin, customer=cast.government, required=True)
    refused = client.get("/api/v1/customers/")
    assert refused.status_code == 401
    assert "two-factor" in refused.json()["message"]
    enrol_totp(cast.sub_admin)
    assert client.get("/api/v1/customers/").status_code == 200


def test_reset_of_another_second_factor_within_scope_only(cast: Cast) -> None:
    secret, _codes = enrol_totp(cast.ministry_viewer)
    victim = Client()
    password_login(victim, "ministry.viewer")
    challenge(victim, code_for(secret))
    assert is_fully_in(victim)
    # Outside the subtree: 404, nothing changes.
    with pytest.raises(Http404):
        ia.reset_two_factor(actor=cast.sibling_admin, admin=cast.ministry_viewer)
    assert TotpDevice.objects.filter(owner=cast.ministry_viewer).exists()
    # Through the portal, by an administrator of the subtree.
    admin = Client()
    password_login(admin, "sub.admin")
    response = admin.post(
        reverse("tenants:administrator-reset-two-factor", args=[cast.ministry_viewer.pk])
    )
    assert response.status_code == 302
    assert not TotpDevice.objects.filter(owner=cast.ministry_viewer).exists()
    assert not RecoveryCode.objects.filter(owner=cast.ministry_viewer).exists()
    record = AuditRecord.objects.filter(action="twofactor.reset").latest("seq")
    assert record.actor_id == cast.sub_admin.pk
    assert record.object_id == str(cast.ministry_viewer.pk)
    # The holder of the old device's session is signed out.
    assert not SessionRecord.objects.filter(
        owner=cast.ministry_viewer, revoked_at__isnull=True
    ).exists()
    assert victim.get(reverse("tenants:settings")).status_code == 302


def test_reset_by_the_outsider_in_the_portal_is_a_404(cast: Cast) -> None:
    enrol_totp(cast.ministry_viewer)
    outsider = Client()
    password_login(outsider, "sibling.admin")
    response = outsider.post(
        reverse("tenants:administrator-reset-two-factor", args=[cast.ministry_viewer.pk])
    )
    assert response.status_code == 404
    assert TotpDevice.objects.filter(owner=cast.ministry_viewer).exists()


def test_viewer_cannot_reset_and_nobody_resets_a_more_powerful_one(cast: Cast) -> None:
    from django.core.exceptions import PermissionDenied

    from tenants import permissions as perms
    from tests.fixtures import VIEW_ONLY, make_admin

    clerk = make_admin(cast.department, "dept.clerk", VIEW_ONLY)
    boss = make_admin(cast.department, "dept.boss", perms.ALL)
    manager = make_admin(
        cast.ministry, "ministry.manager", [*VIEW_ONLY, perms.ADMINISTRATORS_MANAGE]
    )
    enrol_totp(clerk)
    enrol_totp(boss)
    with pytest.raises(PermissionDenied):
        ia.reset_two_factor(actor=cast.ministry_viewer, admin=clerk)  # no manage permission
    with pytest.raises(PermissionDenied):
        ia.reset_two_factor(actor=manager, admin=boss)  # holds more than the manager
    assert TotpDevice.objects.filter(owner=clerk).exists()
    assert TotpDevice.objects.filter(owner=boss).exists()
    ia.reset_two_factor(actor=manager, admin=clerk)
    assert not TotpDevice.objects.filter(owner=clerk).exists()


def test_cannot_remove_the_last_factor_while_required(cast: Cast) -> None:
    from tenants.twofactor.session import proof_now

    enrol_totp(cast.sub_admin)
    ia.set_two_factor_policy(actor=cast.root_admin, customer=cast.government, required=True)
    with pytest.raises(ValidationError):
        ia.remove_totp(actor=cast.sub_admin, proof=proof_now(cast.sub_admin, "totp"))
    assert TotpDevice.objects.filter(owner=cast.sub_admin).exists()


def test_policy_page_in_the_portal(cast: Cast) -> None:
    client = Client()
    password_login(client, "root.admin")
    page = client.get(reverse("tenants:customer-identity", args=[cast.government.pk]))
    assert page.status_code == 200
    response = client.post(
        reverse("tenants:customer-two-factor-policy", args=[cast.government.pk]),
        {"require_two_factor": "on"},
    )
    assert response.status_code == 302
    cast.government.refresh_from_db()
    assert cast.government.require_two_factor
    below = client.get(reverse("tenants:customer-identity", args=[cast.ministry.pk]))
    assert "Required by a customer above" in below.content.decode()
