"""Controller key material: generation, PEM round trip, OpenSSH forms, fingerprints."""

import shutil
import subprocess

import pytest

from deploy.connector.keys import (
    InvalidKeyError,
    fingerprint_sha256,
    generate_private_key,
    load_private_key,
    load_public_key,
    normalize_public_key,
    private_key_to_pem,
    public_key_openssh,
)


@pytest.fixture(scope="module")
def key():
    return generate_private_key()


def test_pem_round_trip_keeps_the_key(key):
    loaded = load_private_key(private_key_to_pem(key))
    assert loaded.asbytes() == key.asbytes()


def test_password_protected_pem_needs_the_right_password(key):
    pem = private_key_to_pem(key, password="s3cret")
    assert "ENCRYPTED" in pem
    assert load_private_key(pem, password="s3cret").asbytes() == key.asbytes()
    with pytest.raises(InvalidKeyError):
        load_private_key(pem)
    with pytest.raises(InvalidKeyError):
        load_private_key(pem, password="wrong")


def test_garbage_is_not_a_key():
    with pytest.raises(InvalidKeyError):
        load_private_key("-----BEGIN NONSENSE-----\nabc\n-----END NONSENSE-----\n")


def test_public_key_line_has_type_data_and_comment(key):
    line = public_key_openssh(key, "ums-controller@example")
    key_type, data, comment = line.split(" ")
    assert key_type == "ecdsa-sha2-nistp256"
    assert comment == "ums-controller@example"
    assert load_public_key(line).asbytes() == key.asbytes()
    assert normalize_public_key(line) == f"{key_type} {data}"


def test_comment_cannot_inject_a_second_authorized_keys_line(key):
    with pytest.raises(ValueError):
        public_key_openssh(key, "x\nssh-ed25519 AAAA attacker")


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs openssh-client")
def test_fingerprint_matches_ssh_keygen(key, tmp_path):
    line = public_key_openssh(key, "c")
    path = tmp_path / "k.pub"
    path.write_text(line + "\n")
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split()[1] == fingerprint_sha256(line) == fingerprint_sha256(key)


def test_key_type_must_match_key_data(key):
    data = public_key_openssh(key).split()[1]
    with pytest.raises(InvalidKeyError):
        normalize_public_key(f"ssh-ed25519 {data}")
    with pytest.raises(InvalidKeyError):
        normalize_public_key("ssh-ed25519 not-base64!!")


def test_rsa_keys_are_at_least_3072_bits():
    with pytest.raises(ValueError):
        generate_private_key("rsa", bits=2048)
