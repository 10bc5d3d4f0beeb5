"""Helpers for the enrolment tests: host keys and the facts a node reports."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519


def new_host_key() -> str:
    """A fresh ``"ssh-ed25519 base64"`` public key, as in /etc/ssh/ssh_host_ed25519_key.pub."""
    return (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode("ascii")
    )


def facts(host_key: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Facts as register_node receives them (snake_case, after the API's parser)."""
    data: dict[str, Any] = {
        "hostname": "mx1.example.org",
        "addresses": ["192.0.2.10", "2001:db8::10"],
        "ssh_address": "192.0.2.10",
        "ssh_port": 22,
        "host_keys": [host_key or new_host_key()],
        "os_id": "debian",
        "os_version": "12",
        "os_pretty_name": "Debian GNU/Linux 12 (bookworm)",
        "cpus": 4,
        "memory_mb": 7936,
        "disks": [
            {
                "device": "/dev/vda1",
                "fstype": "ext4",
                "mount": "/",
                "size_kb": 41152736,
                "used_kb": 2048000,
                "avail_kb": 37000000,
            }
        ],
    }
    data.update(overrides)
    return data


def api_body(token: str, host_key: str | None = None, **overrides: Any) -> dict[str, Any]:
    """The JSON body bootstrapcore.sh posts (camelCase)."""
    data = facts(host_key)
    body: dict[str, Any] = {
        "token": token,
        "hostname": data["hostname"],
        "addresses": data["addresses"],
        "sshAddress": data["ssh_address"],
        "sshPort": data["ssh_port"],
        "hostKeys": data["host_keys"],
        "osId": data["os_id"],
        "osVersion": data["os_version"],
        "osPrettyName": data["os_pretty_name"],
        "cpus": data["cpus"],
        "memoryMb": data["memory_mb"],
        "disks": [
            {
                "device": "/dev/vda1",
                "fstype": "ext4",
                "mount": "/",
                "sizeKb": 41152736,
                "usedKb": 2048000,
                "availKb": 37000000,
            }
        ],
    }
    body.update(overrides)
    return body
