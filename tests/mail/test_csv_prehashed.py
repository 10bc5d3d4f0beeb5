"""CSV import of SHA512-CRYPT hashes brought from another mail system (issue 19): taken as
they are when strictly well-formed, verified by the C library's crypt(3) (what Courier's
authlib calls for ``$6$``), anything else refused with a row error and nothing written."""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest
from django.urls import reverse

from mail import csv_import, passwords
from mail.models import Mailbox
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain
from ums.models import Job

SALT = "Zq0./abcdEFGH123"


def system_crypt(password: str, setting: str) -> str:
    """crypt(3) of the system library itself, not UMS's wrapper (Courier's check)."""
    name = ctypes.util.find_library("crypt")
    assert name, "libcrypt is missing: install libcrypt1"
    library = ctypes.CDLL(name)
    library.crypt.restype = ctypes.c_char_p
    library.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    return library.crypt(password.encode(), setting.encode()).decode()


def test_well_formed_hashes_are_taken_and_others_refused() -> None:
    plain = system_crypt("Harbour-Quartz-Mesa-77", f"$6${SALT}$")
    rounds = system_crypt("Harbour-Quartz-Mesa-77", f"$6$rounds=10000${SALT}$")
    assert passwords.imported_hash(plain) == plain
    assert passwords.imported_hash("{SHA512-CRYPT}" + plain) == plain
    assert passwords.imported_hash(rounds) == rounds
    bcrypt = system_crypt("Harbour-Quartz-Mesa-77", "$2y$05$abcdefghijklmnopqrstuu")
    for bad in (
        plain[:-1],  # digest one character short
        plain + "x",
        plain.replace("$6$", "$5$"),
        plain + "\n|uid=0",
        plain.replace(SALT, "bad salt"),
        rounds.replace("rounds=10000", "rounds=0999"),
        rounds.replace("rounds=10000", "rounds=2000000"),  # every login would burn CPU
        "{SSHA}" + plain,
        "{SHA512-CRYPT}",
        bcrypt,  # Courier would take it; the Radicale plugin and verify() would not
    ):
        with pytest.raises(Exception, match="SHA512-CRYPT"):
            passwords.imported_hash(bad)


@pytest.mark.django_db
def test_dry_run_names_bad_hash_rows(cast: Cast) -> None:
    make_domain(cast.ministry, "ministry.example")
    good = system_crypt("Harbour-Quartz-Mesa-77", f"$6${SALT}$")
    data = (
        "type,address,password\n"
        f"mailbox,ok@ministry.example,{good}\n"
        f"mailbox,short@ministry.example,{good[:-2]}\n"
        "mailbox,md5@ministry.example,$1$abcdefgh$0123456789abcdefghijkl\n"
    )
    report = csv_import.dry_run(data, actor=cast.sub_admin)
    rows = {e["row"]: e["errors"] for e in report["errors"]}
    assert set(rows) == {3, 4}
    assert all("SHA512-CRYPT" in str(errors["password"]) for errors in rows.values())


@pytest.mark.django_db(transaction=True)
def test_import_stores_given_hashes_that_crypt_verifies() -> None:
    from tests.fixtures import build_cast

    cast = build_cast()
    make_domain(cast.ministry, "ministry.example")
    imported = system_crypt("Harbour-Quartz-Mesa-77", f"$6$rounds=6000${SALT}$")
    data = (
        "type,address,password\n"
        f"mailbox,moved@ministry.example,{{SHA512-CRYPT}}{imported}\n"
        "mailbox,fresh@ministry.example,Birch-Canyon-Delta-31\n"
    )
    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("mail-import-list"), {"csv": data, "dryRun": False}, format="json"
    )
    assert response.status_code == 201, response.content
    job = Job.objects.get(pk=response.json()["job"])
    assert job.status == Job.SUCCEEDED, (job.error, job.log)
    # Only the plain password waited for the activation job; the hash was never pending.
    assert job.result["passwords_pending"] == 1
    assert (
        '"encrypted %(count)s passwords for activation in %(seconds).1f s", "p": {"count": 1,'
        in job.log
    )
    moved = Mailbox.objects.get(email="moved@ministry.example")
    assert moved.password_hash == imported
    assert system_crypt("Harbour-Quartz-Mesa-77", moved.password_hash) == imported
    assert system_crypt("Harbour-Quartz-Mesa-78", moved.password_hash) != imported
    fresh = Mailbox.objects.get(email="fresh@ministry.example").password_hash
    assert system_crypt("Birch-Canyon-Delta-31", fresh) == fresh
    assert passwords.verify("Harbour-Quartz-Mesa-77", moved.password_hash)
