"""Choosing the issuer of a load balancer name: the action, its audit record, the command,
and the account key encrypted at rest."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from audit.models import AuditRecord
from deploy.certificate_models import AcmeAccount, LbCertificate
from deploy.lb_certificates import set_certificate_issuer
from deploy.services.nginx.acme import new_account_key
from tests.fixtures import Cast

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
