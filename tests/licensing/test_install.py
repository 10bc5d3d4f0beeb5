"""Installing a licence: only genuine, current licences, only by operators, always audited."""

from __future__ import annotations

import datetime
import io
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import CommandError, call_command

from audit.models import AuditRecord
from licensing import actions, enforce, state
from licensing.models import InstalledLicence
from tests.fixtures import Cast
from tests.licensing.conftest import make_licence
from tests.licensing.test_document import _altered

pytestmark = pytest.mark.django_db


def _refused(cast: Cast, text: str) -> str:
    before = (InstalledLicence.objects.count(), AuditRecord.objects.count())
    with pytest.raises(ValidationError) as refused:
        actions.install_licence(actor=cast.root_admin, text=text)
    assert (InstalledLicence.objects.count(), AuditRecord.objects.count()) == before
    return " ".join(refused.value.message_dict["text"])


def test_an_operator_installs_a_licence_and_it_is_audited(cast: Cast) -> None:
    licence = actions.install_licence(actor=cast.root_admin, text=make_licence(limit=50))
    status = state.current()
    assert status.state == state.VALID and status.licence == licence
    record = AuditRecord.objects.get(action="licence.install")
    assert record.actor_id == cast.root_admin.pk and record.customer_path == cast.provider.path
    assert record.changes["after"]["limit"] == 50 and record.changes["before"] == {}
    # A replacement records the old terms beside the new.
    actions.install_licence(actor=cast.root_admin, text=make_licence(limit=80, licence_id="L2"))
    second = AuditRecord.objects.filter(action="licence.install").order_by("-seq").first()
    assert second.changes["before"]["limit"] == 50 and second.changes["after"]["limit"] == 80
    assert state.current().licence.limit == 80


def test_tampered_foreign_malformed_and_expired_licences_change_nothing(cast: Cast) -> None:
    actions.install_licence(actor=cast.root_admin, text=make_licence(limit=10))
    assert "altered" in _refused(cast, _altered(make_licence(limit=10), limit=10_000))
    assert "not issued for this product" in _refused(
        cast, make_licence(key=Ed25519PrivateKey.generate())
    )
    assert "not a UMS licence" in _refused(cast, "just some text")
    old = make_licence(issued=datetime.date(2020, 1, 1), days=365)
    assert "expired on" in _refused(cast, old)
    assert state.current().licence.limit == 10


def test_only_operators_install(cast: Cast) -> None:
    with pytest.raises(PermissionDenied):
        actions.install_licence(actor=cast.sub_admin, text=make_licence())
    assert not InstalledLicence.objects.exists()


def test_a_stored_licence_edited_in_the_database_is_not_trusted(cast: Cast) -> None:
    from tests.mail.helpers import make_domain, make_mailbox

    domain = make_domain(cast.ministry, "ministry.example")
    actions.install_licence(actor=cast.root_admin, text=make_licence(limit=1))
    row = InstalledLicence.objects.get()
    InstalledLicence.objects.filter(pk=row.pk).update(text=_altered(row.text, limit=1000))
    status = state.current()
    assert status.state == state.INVALID and "altered" in status.error
    # Fail closed: an altered licence allows nothing new.
    with pytest.raises(ValidationError) as refused:
        make_mailbox(domain, "anna")
    assert "cannot be verified" in str(refused.value.message_dict[enforce.FIELD])


def test_the_install_licence_command(cast: Cast, tmp_path: Path) -> None:
    good = tmp_path / "good.licence"
    good.write_text(make_licence(limit=7, licence_id="CLI-1"))
    out = io.StringIO()
    call_command("install_licence", str(good), stdout=out)
    assert "CLI-1" in out.getvalue() and state.current().licence.limit == 7
    record = AuditRecord.objects.get(action="licence.install")
    assert record.actor_name == "system" and record.customer_path == cast.provider.path
    bad = tmp_path / "bad.licence"
    bad.write_text(_altered(make_licence(limit=7), limit=70))
    with pytest.raises(CommandError, match="altered"):
        call_command("install_licence", str(bad))
    assert InstalledLicence.objects.count() == 1
