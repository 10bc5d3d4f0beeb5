"""The signed licence file: genuine ones verify; altered, foreign and broken ones do not."""

from __future__ import annotations

import base64
import datetime
import json
import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from licensing import document, keys
from tests.licensing.conftest import TEST_KEY, make_licence, signer

PUBLIC = signer.public_raw(TEST_KEY)


def _payload_block(text: str) -> str:
    return text.split(document.BEGIN)[1].split(document.SIGNATURE)[0]


def _altered(text: str, **changes: object) -> str:
    """The licence with payload fields changed and the original signature kept."""
    block = _payload_block(text)
    data = json.loads(base64.b64decode("".join(block.split())))
    data.update(changes)
    raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return text.replace(block, "\n" + base64.b64encode(raw).decode() + "\n")


def test_a_genuine_licence_states_its_terms() -> None:
    licence = document.verify(make_licence(model="storage_gb", limit=500), [PUBLIC])
    assert (licence.model, licence.limit, licence.licensee) == ("storage_gb", 500, "Example ISP")
    assert licence.expires - licence.issued == datetime.timedelta(days=365)
    assert licence.key_id == document.key_id(PUBLIC)


def test_an_altered_licence_is_refused_as_tampered() -> None:
    text = make_licence(limit=100)
    with pytest.raises(document.LicenceError) as refused:
        document.verify(_altered(text, limit=1_000_000), [PUBLIC])
    assert refused.value.code == "tampered"
    with pytest.raises(document.LicenceError) as refused:
        document.verify(_altered(text, expires="2099-01-01"), [PUBLIC])
    assert refused.value.code == "tampered"


def test_the_readable_summary_is_not_trusted() -> None:
    text = make_licence(limit=100).replace("Limit: 100 users", "Limit: 999999 users")
    assert document.verify(text, [PUBLIC]).limit == 100


def test_a_licence_signed_by_another_key_is_refused_as_foreign() -> None:
    foreign = make_licence(key=Ed25519PrivateKey.generate())
    with pytest.raises(document.LicenceError) as refused:
        document.verify(foreign, [PUBLIC])
    assert refused.value.code == "foreign"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        document.BEGIN + "\nabc\n" + document.END,
        f"{document.BEGIN}\n!!!!\n{document.SIGNATURE}\nAAAA\n{document.END}",
        "x" * (document.MAX_TEXT + 1),
    ],
)
def test_malformed_text_is_refused(text: str) -> None:
    with pytest.raises(document.LicenceError) as refused:
        document.verify(text, [PUBLIC])
    assert refused.value.code == "malformed"


def test_a_truncated_signature_is_refused() -> None:
    text = make_licence()
    signature = text.split(document.SIGNATURE)[1].split(document.END)[0]
    short = text.replace(signature, "\n" + signature.strip()[:40] + "\n")
    with pytest.raises(document.LicenceError):
        document.verify(short, [PUBLIC])


def test_key_rotation_accepts_a_licence_of_any_listed_key() -> None:
    new_key = Ed25519PrivateKey.generate()
    text = make_licence(key=new_key)
    licence = document.verify(text, [PUBLIC, signer.public_raw(new_key)])
    assert licence.key_id == document.key_id(signer.public_raw(new_key))


def test_signed_nonsense_is_still_refused() -> None:
    text = make_licence()
    raw = json.dumps({"format": 1, "id": "X", "licensee": "A", "model": "users", "limit": 0})
    signature = TEST_KEY.sign(raw.encode())
    bad = (
        f"{document.BEGIN}\n{base64.b64encode(raw.encode()).decode()}\n{document.SIGNATURE}\n"
        f"{base64.b64encode(signature).decode()}\n{document.END}\n"
    )
    assert text  # the genuine one is fine; this one is signed but invalid
    with pytest.raises(document.LicenceError) as refused:
        document.verify(bad, [PUBLIC])
    assert refused.value.code == "invalid"


def test_days_left_and_expiry_are_counted_in_utc_days() -> None:
    licence = document.verify(make_licence(issued=datetime.date(2026, 1, 1), days=30), [PUBLIC])
    assert licence.expires == datetime.date(2026, 1, 31)
    last_day = datetime.datetime(2026, 1, 31, 23, 59, tzinfo=datetime.UTC)
    assert not licence.is_expired(last_day) and licence.days_left(last_day) == 0
    assert licence.is_expired(last_day + datetime.timedelta(minutes=1))
    assert licence.days_left(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)) == 30


def test_production_accepts_only_the_built_in_keys(settings) -> None:
    del settings.UMS_LICENCE_PUBLIC_KEYS
    assert keys.accepted_keys() == [base64.b64decode(k) for k in keys.BUILTIN_PUBLIC_KEYS]
    assert PUBLIC not in keys.accepted_keys()
    # Nothing in the settings module reads a key from the environment.
    source = (keys.settings.BASE_DIR / "ums" / "settings.py").read_text()
    assert not re.search(r"LICENCE", source)
