"""Mailbox passwords: SHA512-CRYPT that openssl (and so Courier's crypt) verifies; the rules."""

from __future__ import annotations

import subprocess

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from mail import actions, passwords
from mail.models import Mailbox
from tests.fixtures import Cast, token_client
from tests.mail.helpers import MAILBOX_PASSWORD, make_domain, make_mailbox


def openssl_hash(password: str, salt: str) -> str:
    result = subprocess.run(
        ["openssl", "passwd", "-6", "-salt", salt, password],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.strip()


@pytest.mark.django_db
def test_stored_hash_verifies_with_openssl_and_is_refused_as_a_password(cast: Cast) -> None:
    mailbox = make_mailbox(make_domain(cast.ministry, "ministry.example"), "alice")
    stored = Mailbox.objects.get(pk=mailbox.pk).password_hash
    assert stored.startswith("$6$")
    salt = stored.split("$")[2]
    assert len(salt) == 16
    assert openssl_hash(MAILBOX_PASSWORD, salt) == stored
    assert openssl_hash("wrong-password", salt) != stored
    assert passwords.verify(MAILBOX_PASSWORD, stored)
    assert not passwords.verify(stored, stored)
    with pytest.raises(ValidationError) as info:
        actions.set_mailbox_password(actor=None, mailbox=mailbox, password=stored)
    assert "hash" in str(info.value.message_dict["password"])
    # Through the API too, and the hash never appears in a response.
    client = token_client(cast.sub_admin)
    url = reverse("mail-mailbox-set-password", args=[mailbox.pk])
    response = client.post(url, {"password": stored}, format="json")
    assert response.status_code == 400
    body = client.get(reverse("mail-mailbox-detail", args=[mailbox.pk])).content.decode()
    assert stored not in body and "passwordHash" not in body


@pytest.mark.parametrize(
    ("password", "salt"),
    [("secret", "abcdefgh"), ("x" * 128, "./ABCxyz0123456"), ("Pass word with spaces!", "s")],
)
def test_python_and_system_crypt_agree_with_openssl(password: str, salt: str) -> None:
    expected = openssl_hash(password, salt)
    assert passwords.sha512_crypt(password, salt) == expected
    assert passwords.sha512_crypt_python(password.encode(), salt.encode()) == expected


@pytest.mark.parametrize(
    ("password", "needle"),
    [
        ("Good-Password-1\nuid=0", "control"),
        ("Good-Password-1\t", "control"),
        ("Good-Password\x00-1", "control"),
        ("Good-Pass|uid=0-1x", "|"),
        ("Aa1 systempw=secret", "name="),
        ("$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil", "hash"),
        ("{SHA512-CRYPT}$6$abc$def", "hash"),
        ("Short-1", "at least 10"),
        ("lowercaseonly", "three of"),
        ("password1234", "too common"),
        ("Пароль-Надёжный-2026", "ASCII"),
        (" Leading-Space-12", "start or end"),
        ("X" * 60 + "a1-" * 30, "at most 128"),
    ],
)
def test_weak_or_tricky_passwords_are_refused(password: str, needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        passwords.check_password(password, local_part="alice", domain="example.org")
    assert needle.lower() in " ".join(info.value.messages).lower()


def test_password_containing_the_mailbox_name_is_refused() -> None:
    with pytest.raises(ValidationError):
        passwords.check_password("Alice-Garden-7", local_part="alice")
    assert passwords.check_password("correct horse battery staple") == (
        "correct horse battery staple"
    )


@pytest.mark.django_db
def test_api_refuses_bad_password_and_keeps_nothing(cast: Cast) -> None:
    domain = make_domain(cast.ministry, "ministry.example")
    response = token_client(cast.sub_admin).post(
        reverse("mail-mailbox-list"),
        {"domain": domain.pk, "localPart": "eve", "password": "abc\ndef=1"},
        format="json",
    )
    assert response.status_code == 400
    assert "password" in response.json()["errors"]
    assert not Mailbox.objects.filter(email="eve@ministry.example").exists()
