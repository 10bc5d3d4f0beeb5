"""LDAPS sign-in per customer against a real slapd started by the test: group → permission
mapping at every login, wrong passwords, StartTLS, certificate checking, a directory that is
down, and accounts outside the customer's subtree."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from audit.models import AuditRecord
from tenants import actions
from tenants import permissions as perms
from tenants.models import Administrator, LoginFailure
from tenants.models_identity import LdapDirectory
from tests.fixtures import PASSWORD, Cast
from tests.identity import slapd as slapd_harness
from tests.identity.conftest import is_fully_in, password_login

pytestmark = pytest.mark.django_db

ADMIN_CODES = slapd_harness.ADMIN_CODES
VIEWER_CODES = slapd_harness.VIEWER_CODES


def configure(cast: Cast, server: slapd_harness.Slapd, **overrides: Any) -> LdapDirectory:
    return slapd_harness.configure_directory(cast, server, **overrides)


def alice_password() -> str:
    return slapd_harness.USERS["alice"][1]


def test_ldaps_login_creates_the_administrator_with_group_permissions(
    cast: Cast, directory_server: slapd_harness.Slapd
) -> None:
    directory = configure(cast, directory_server)
    client = Client()
    response = password_login(client, "alice@corp.example", alice_password())
    assert response.status_code == 302, response.content.decode()
    assert is_fully_in(client)
    alice = Administrator.objects.get(username="alice@corp.example")
    assert alice.customer_id == cast.ministry.pk
    assert alice.full_name == "Alice Liddell"
    assert alice.email == "alice@corp.example"
    assert set(alice.permissions) == set(ADMIN_CODES) | set(VIEWER_CODES)
    assert not alice.has_usable_password()  # the directory holds the password, not us
    assert AuditRecord.objects.filter(action="auth.ldap_login", actor_id=alice.pk).exists()
    created = AuditRecord.objects.get(action="administrator.create", object_id=str(alice.pk))
    assert created.changes["source"] == "ldap"
    assert created.changes["directory"] == directory.pk
    assert (
        AuditRecord.objects.filter(action="auth.login", actor_id=alice.pk)
        .latest("seq")
        .changes["method"]
        == "ldap"
    )
    # Scoped like everyone at the Ministry: the Government above is out of reach.
    assert client.get(f"/api/v1/customers/{cast.government.pk}/").status_code == 404
    assert client.get(f"/api/v1/customers/{cast.department.pk}/").status_code == 200


def test_permissions_follow_the_groups_at_each_login(
    cast: Cast, directory_server: slapd_harness.Slapd
) -> None:
    configure(cast, directory_server)
    password_login(Client(), "alice@corp.example", alice_password())
    # groupOfNames needs a member: hand the group to bob instead of alice.
    directory_server.modify(
        f"dn: {slapd_harness.ADMINS_GROUP}\nchangetype: modify\n"
        f"replace: member\nmember: uid=bob,{slapd_harness.PEOPLE}\n"
    )
    try:
        client = Client()
        assert password_login(client, "alice@corp.example", alice_password()).status_code == 302
        alice = Administrator.objects.get(username="alice@corp.example")
        assert set(alice.permissions) == set(VIEWER_CODES)
        change = AuditRecord.objects.filter(
            action="administrator.update", object_id=str(alice.pk)
        ).latest("seq")
        assert change.changes["source"] == "ldap"
        assert set(change.changes["before"]["permissions"]) == set(ADMIN_CODES) | set(VIEWER_CODES)
        # The portal now refuses what the group used to grant.
        assert client.get("/customers/").status_code == 403
    finally:
        directory_server.modify(
            f"dn: {slapd_harness.ADMINS_GROUP}\nchangetype: modify\n"
            f"replace: member\nmember: uid=alice,{slapd_harness.PEOPLE}\n"
        )


def test_wrong_password_is_refused_and_counted(
    cast: Cast, directory_server: slapd_harness.Slapd
) -> None:
    configure(cast, directory_server)
    client = Client()
    response = password_login(client, "alice@corp.example", "not-her-password")
    assert response.status_code == 200
    assert "Please enter a correct" in response.content.decode()
    assert not is_fully_in(client)
    assert not Administrator.objects.filter(username="alice@corp.example").exists()
    assert LoginFailure.objects.filter(kind="account", key="alice@corp.example").count() == 1
    assert (
        AuditRecord.objects.filter(action="auth.login_failed").latest("seq").changes["username"]
        == "alice@corp.example"
    )
    # Someone else's directory password does not work for alice either.
    response = password_login(Client(), "alice@corp.example", slapd_harness.USERS["bob"][1])
    assert response.status_code == 200


def test_starttls_on_the_plain_port_works(
    cast: Cast, directory_server: slapd_harness.Slapd
) -> None:
    configure(cast, directory_server, server_uri=directory_server.ldap_url, start_tls=True)
    client = Client()
    assert (
        password_login(client, "bob@corp.example", slapd_harness.USERS["bob"][1]).status_code == 302
    )
    bob = Administrator.objects.get(username="bob@corp.example")
    assert set(bob.permissions) == set(VIEWER_CODES)


def test_unencrypted_ldap_is_refused_at_configuration(
    cast: Cast, directory_server: slapd_harness.Slapd
) -> None:
    with pytest.raises(ValidationError) as refused:
        configure(cast, directory_server, server_uri=directory_server.ldap_url, start_tls=False)
    assert "server_uri" in refused.value.message_dict
    with pytest.raises(ValidationError):
        configure(cast, directory_server, server_uri="http://127.0.0.1:389")
    assert not LdapDirectory.objects.exists()


def test_a_directory_certificate_from_another_ca_is_refused(
    cast: Cast, directory_server: slapd_harness.Slapd
) -> None:
    from cryptography.hazmat.primitives import serialization

    _key, other_ca = slapd_harness.make_ca("Some other CA")
    other_pem = other_ca.public_bytes(serialization.Encoding.PEM).decode()
    configure(cast, directory_server, ca_certificate=other_pem)
    client = Client()
    response = password_login(client, "alice@corp.example", alice_password())
    assert response.status_code == 200
    assert "certificate could not be verified" in response.content.decode()
    assert not is_fully_in(client)
    assert not Administrator.objects.filter(username="alice@corp.example").exists()


def test_directory_down_gives_a_clear_message_and_local_accounts_still_work(
    cast: Cast, directory_server: slapd_harness.Slapd
) -> None:
    configure(cast, directory_server)
    directory_server.stop()
    try:
        client = Client()
        response = password_login(client, "alice@corp.example", alice_password())
        assert response.status_code == 200
        html = response.content.decode()
        assert "cannot be reached right now" in html
        assert not is_fully_in(client)
        # An outage is not the user's fault: it does not count towards their lock.
        assert not LoginFailure.objects.filter(key="alice@corp.example").exists()
        assert AuditRecord.objects.filter(action="auth.ldap_unreachable").exists()
        # Local accounts are untouched by the outage.
        local = Client()
        assert password_login(local, "sub.admin").status_code == 302
        assert is_fully_in(local)
    finally:
        directory_server.start()
    assert password_login(Client(), "alice@corp.example", alice_password()).status_code == 302


def test_directory_never_signs_in_an_account_outside_its_subtree(
    cast: Cast, directory_server: slapd_harness.Slapd
) -> None:
    configure(cast, directory_server)
    # Someone at the ISP happens to hold the username the directory would map alice to.
    outsider = actions.create_administrator(
        actor=None,
        customer=cast.isp,
        username="alice@corp.example",
        full_name="Another Alice",
        email="alice@isp.example",
        password=PASSWORD,
        permissions=[perms.CUSTOMERS_VIEW],
    )
    client = Client()
    response = password_login(client, "alice@corp.example", alice_password())
    assert response.status_code == 200
    assert not is_fully_in(client)
    outsider.refresh_from_db()
    assert outsider.customer_id == cast.isp.pk
    assert outsider.permissions == [perms.CUSTOMERS_VIEW]
    assert AuditRecord.objects.filter(
        action="auth.ldap_conflict", object_id=str(outsider.pk)
    ).exists()


def test_bind_password_is_encrypted_at_rest_and_never_shown(
    cast: Cast, directory_server: slapd_harness.Slapd
) -> None:
    from django.db import connection

    directory = configure(cast, directory_server)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT bind_password FROM tenants_ldapdirectory WHERE id = %s", [directory.pk]
        )
        raw = cursor.fetchone()[0]
    assert slapd_harness.BIND_PASSWORD not in raw
    assert LdapDirectory.objects.get(pk=directory.pk).bind_password == slapd_harness.BIND_PASSWORD
    record = AuditRecord.objects.get(action="identity.ldap_created")
    assert slapd_harness.BIND_PASSWORD not in str(record.changes)
