"""Choosing the issuer of a load balancer name: the action, its audit record, the command,
and the account key encrypted at rest."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.exceptions import PermissionDenied
from django.core.management import CommandError, call_command
from django.db import connection

from audit.models import AuditRecord
from deploy.certificate_models import AcmeAccount, LbCertificate
from deploy.lb_certificates import set_certificate_issuer
from deploy.services.nginx.acme import new_account_key
from tests.api.contracts import COVERED
from tests.fixtures import Cast, token_client

pytestmark = pytest.mark.django_db


def test_choosing_acme_is_audited_and_switching_back_keeps_one_row(cast: Cast) -> None:
    set_certificate_issuer(actor=cast.root_admin, name="webmail.example.org", issuer="acme")
    set_certificate_issuer(actor=cast.root_admin, name="webmail.example.org", issuer="local-ca")
    row = LbCertificate.objects.get(name="webmail.example.org")
    assert row.issuer == "local-ca"
    records = AuditRecord.objects.filter(action="lb_certificate.issuer").order_by("seq")
    assert [r.changes["after"] for r in records] == [{"issuer": "acme"}, {"issuer": "local-ca"}]
    assert records[1].changes["before"] == {"issuer": "acme"}


@pytest.mark.parametrize("name", ["x; include /etc/shadow", "../etc", "_default", ""])
def test_names_that_could_reach_a_path_or_config_are_refused(cast: Cast, name: str) -> None:
    with pytest.raises(ValueError):
        set_certificate_issuer(actor=cast.root_admin, name=name, issuer="acme")
    assert not LbCertificate.objects.exists()


def test_command_sets_and_lists(cast: Cast) -> None:
    out = StringIO()
    call_command("lb_certificate", "files.example.org", "--issuer", "acme", "--list", stdout=out)
    assert "files.example.org\tacme" in out.getvalue()
    with pytest.raises(CommandError):
        call_command("lb_certificate", "files.example.org")


def test_account_key_is_encrypted_at_rest(db: None) -> None:
    key = new_account_key()
    account = AcmeAccount.objects.create(directory_url="https://ca.test/dir", key_pem=key)
    with connection.cursor() as cursor:
        cursor.execute("SELECT key_pem FROM deploy_acmeaccount WHERE id = %s", [account.pk])
        stored = cursor.fetchone()[0]
    assert "PRIVATE KEY" not in stored
    assert AcmeAccount.objects.get(pk=account.pk).key_pem == key


# --------------------------------------------------------------------------- API and portal
COVERED.update({"lb-certificates", "lb-certificate", "lb-certificate-renew"})  # below
WEBMAIL = "webmail.example.org"


@pytest.fixture
def store(settings, tmp_path) -> None:
    """Local-CA certificates in a private store, as a renewal pass without ACME leaves."""
    from deploy.lb_certificates import renew_pass

    settings.UMS_TLS_CERT_DIR = str(tmp_path / "certs")
    settings.UMS_LB_HOSTNAMES = {WEBMAIL: [WEBMAIL]}
    settings.UMS_ACME_DIRECTORY = ""
    renew_pass()


def test_operators_list_and_change_issuers_through_the_api(cast: Cast, store) -> None:
    api = token_client(cast.root_admin)
    listed = api.get("/api/v1/lb-certificates/").json()
    assert listed["acmeEnabled"] is False
    (row,) = listed["results"]
    assert row["name"] == WEBMAIL and row["issuer"] == "local-ca"
    assert row["installedBy"] and row["daysLeft"] >= 80 and row["lastError"] == ""

    bad = api.patch(f"/api/v1/lb-certificates/{WEBMAIL}/", {"issuer": "self"}, format="json")
    assert bad.status_code == 400 and set(bad.json()["errors"]) == {"issuer"}
    assert api.patch("/api/v1/lb-certificates/x;y/", {"issuer": "acme"}).status_code == 404
    changed = api.patch(f"/api/v1/lb-certificates/{WEBMAIL}/", {"issuer": "acme"}, format="json")
    assert changed.status_code == 200, changed.content
    assert changed.json()["issuer"] == "acme"
    assert AuditRecord.objects.filter(action="lb_certificate.issuer").count() == 1

    first = api.post("/api/v1/lb-certificates/renewal/")
    again = api.post("/api/v1/lb-certificates/renewal/")
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]  # one renewal queued, not two


def test_tenants_and_readers_cannot_touch_certificates(cast: Cast, store) -> None:
    from rest_framework.test import APIClient

    assert APIClient().get("/api/v1/lb-certificates/").status_code in (401, 403)
    for admin in (cast.sub_admin, cast.sibling_admin):  # below the top-level customer
        api = token_client(admin)
        assert api.get("/api/v1/lb-certificates/").status_code == 403
        response = api.patch(f"/api/v1/lb-certificates/{WEBMAIL}/", {"issuer": "acme"})
        assert response.status_code == 403
        assert api.post("/api/v1/lb-certificates/renewal/").status_code == 403
    assert not LbCertificate.objects.exists()
    with pytest.raises(PermissionDenied):
        set_certificate_issuer(actor=cast.sub_admin, name=WEBMAIL, issuer="acme")


def test_portal_page_changes_the_issuer_and_renews(cast: Cast, store) -> None:
    from django.test import Client
    from django.urls import reverse

    client = Client()
    client.force_login(cast.root_admin)
    page = client.get(reverse("servers:certificate-list")).content.decode()
    assert WEBMAIL in page and "Renew now" in page
    assert (
        reverse("servers:certificate-list") in client.get(reverse("servers:home")).content.decode()
    )
    client.post(reverse("servers:certificate-issuer"), {"name": WEBMAIL, "issuer": "acme"})
    assert LbCertificate.objects.get(name=WEBMAIL).issuer == "acme"
    response = client.post(
        reverse("servers:certificate-issuer"), {"name": "../x", "issuer": "acme"}
    )
    assert response.status_code == 302 and LbCertificate.objects.count() == 1
    response = client.post(reverse("servers:certificate-renew"))
    assert "/jobs/" in response["Location"]

    tenant = Client()
    tenant.force_login(cast.sub_admin)
    assert tenant.get(reverse("servers:certificate-list")).status_code == 403
    assert tenant.post(reverse("servers:certificate-renew")).status_code == 403
