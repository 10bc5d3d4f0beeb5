"""Licences signed with the test key (tests/licensing/keys/), which the product accepts
only because these tests put it in ``settings.UMS_LICENCE_PUBLIC_KEYS``."""

from __future__ import annotations

import datetime
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.portal.conftest import fresh_action_context, login  # noqa: F401

KEYS = Path(__file__).parent / "keys"
_spec = importlib.util.spec_from_file_location(
    "sign_licence", Path(__file__).parents[2] / "scripts" / "sign_licence.py"
)
signer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(signer)
TEST_KEY = signer.load_private(KEYS / "test-signing-key.pem")
TEST_PUBLIC = (KEYS / "test-signing-key.pub").read_text().strip()


@pytest.fixture(autouse=True)
def test_licence_key(settings: Any) -> None:
    settings.UMS_LICENCE_PUBLIC_KEYS = [TEST_PUBLIC]


def make_licence(
    *,
    model: str = "users",
    limit: int = 100,
    issued: datetime.date | None = None,
    days: int = 365,
    licensee: str = "Example ISP",
    licence_id: str = "LIC-TEST-1",
    key: Ed25519PrivateKey | None = None,
) -> str:
    payload = signer.make_payload(
        licensee=licensee,
        model=model,
        limit=limit,
        issued=issued or datetime.datetime.now(datetime.UTC).date(),
        days=days,
        licence_id=licence_id,
    )
    return signer.sign_payload(payload, key or TEST_KEY)


@pytest.fixture
def licence_text() -> Callable[..., str]:
    return make_licence
