"""Enrolment tokens and node registration: the action layer and the registration endpoint.

The script itself is run for real against real nodes in test_bootstrap.py; these tests
pin down what the server accepts and refuses, whoever calls it.
"""

from __future__ import annotations

import datetime
import json
import threading
import uuid
from typing import Any

import pytest
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.http import Http404
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditRecord
from servers import actions as server_actions
from servers import enrolment
from servers.choices import NodeStatus
from servers.models import EnrolmentToken, Node, Zone
from tests.fixtures import Cast

from .enrolment_helpers import api_body, facts, new_host_key

pytestmark = pytest.mark.django_db

REGISTER = "/api/v1/nodes/register/"


@pytest.fixture(autouse=True)
def generous_throttle(settings: Any) -> None:
    # Registration is throttled per address; these tests post many times from one address
    # and the throttle test sets its own rate.
    settings.NODE_REGISTER_THROTTLE_RATE = "100000/minute"


def new_token(zone: Zone, actor: Any = None, **kwargs: Any) -> tuple[EnrolmentToken, str]:
    kwargs.setdefault("name", "rack 4")
    return enrolment.create_enrolment_token(actor=actor, zone=zone, **kwargs)


def post(body: Any, **extra: Any) -> Any:
    return APIClient().post(REGISTER, body, format="json", **extra)


# ----------------------------------------------------------------------------- tokens


def test_token_is_shown_once_and_stored_as_a_hash(cast: Cast, zone: Zone) -> None:
    token, full = new_token(zone, cast.sub_admin, max_uses=3)
    prefix, secret = enrolment.split_token(full)
    assert token.prefix == prefix
    assert secret not in token.secret_hash
    assert token.customer_path == zone.customer_path
    assert token.max_uses == 3 and token.uses == 0
    assert token.expires_at > timezone.now() + datetime.timedelta(hours=23)
    record = AuditRecord.objects.get(action="enrolment_token.create")
    assert record.actor_id == cast.sub_admin.pk
    assert secret not in json.dumps(record.changes)


def test_token_creation_checks_scope_permission_and_bounds(cast: Cast, zone: Zone) -> None:
    with pytest.raises(Http404):
        new_token(zone, cast.sibling_admin)
    with pytest.raises(PermissionDenied):
        new_token(zone, cast.ministry_viewer)
    past = timezone.now() - datetime.timedelta(minutes=1)
    with pytest.raises(ValidationError) as excinfo:
        new_token(zone, cast.sub_admin, expires_at=past)
    assert "expires_at" in excinfo.value.message_dict
    with pytest.raises(ValidationError) as excinfo:
        new_token(zone, cast.sub_admin, max_uses=0)
    assert "max_uses" in excinfo.value.message_dict
    assert not EnrolmentToken.objects.exists()


def test_revoke_is_audited_once(cast: Cast, zone: Zone) -> None:
    token, _full = new_token(zone, cast.sub_admin)
    enrolment.revoke_enrolment_token(actor=cast.sub_admin, token=token)
    enrolment.revoke_enrolment_token(actor=cast.sub_admin, token=token)
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert AuditRecord.objects.filter(action="enrolment_token.revoke").count() == 1
    with pytest.raises(Http404):
        enrolment.revoke_enrolment_token(actor=cast.sibling_admin, token=token)


# ----------------------------------------------------------------------------- registration


def test_registration_creates_a_pending_node_in_the_token_zone(cast: Cast, zone: Zone) -> None:
    token, full = new_token(zone, cast.sub_admin)
    key = new_host_key()
    node, created = enrolment.register_node(token_string=full, facts=facts(key))
    assert created
    assert node.status == NodeStatus.PENDING
    assert node.zone == zone and node.customer == zone.customer
    assert node.customer_path == zone.customer_path
    assert node.reported_host_keys == [key]
    assert node.pinned_host_keys == []  # trusted only once an administrator approves
    assert node.hostname == "mx1.example.org"
    assert node.ssh_address == "192.0.2.10"
    assert (node.os_id, node.os_version, node.cpus) == ("debian", "12", 4)
    assert node.disks[0]["mount"] == "/"
    assert node.enrolled_with_id == token.pk
    token.refresh_from_db()
    assert token.uses == 1
    record = AuditRecord.objects.get(action="node.register")
    assert record.actor_id is None
    assert record.actor_name == "system"
    assert record.changes["token"] == token.prefix
    assert record.customer_path == zone.customer_path


def test_same_node_registering_again_updates_it_without_using_the_token(
    cast: Cast, zone: Zone
) -> None:
    token, full = new_token(zone, cast.sub_admin, max_uses=1)
    key = new_host_key()
    first, created = enrolment.register_node(token_string=full, facts=facts(key))
    assert created
    again, created = enrolment.register_node(
        token_string=full, facts=facts(key, cpus=8, ssh_address="192.0.2.11")
    )
    assert not created
    assert again.pk == first.pk
    assert again.cpus == 8 and again.ssh_address == "192.0.2.11"
    token.refresh_from_db()
    assert token.uses == 1
    assert Node.objects.count() == 1
    assert AuditRecord.objects.filter(action="node.reregister").count() == 1


def test_an_approved_node_is_not_changed_by_a_rerun(cast: Cast, zone: Zone) -> None:
    _token, full = new_token(zone, cast.sub_admin)
    key = new_host_key()
    node, _created = enrolment.register_node(token_string=full, facts=facts(key))
    Node.objects.filter(pk=node.pk).update(status=NodeStatus.ACTIVE, pinned_host_keys=[key])
    again, created = enrolment.register_node(
        token_string=full, facts=facts(key, ssh_address="198.51.100.7")
    )
    assert not created
    again.refresh_from_db()
    assert again.ssh_address == "192.0.2.10"
    assert again.status == NodeStatus.ACTIVE


def test_a_known_host_key_cannot_be_enrolled_into_another_zone(cast: Cast, zone: Zone) -> None:
    other = server_actions.create_zone(actor=None, customer=cast.isp, name="ISP DC")
    _token, full = new_token(zone)
    _other_token, other_full = new_token(other)
    key = new_host_key()
    enrolment.register_node(token_string=full, facts=facts(key))
    with pytest.raises(enrolment.EnrolmentRefused) as excinfo:
        enrolment.register_node(token_string=other_full, facts=facts(key))
    assert excinfo.value.status == 409
    assert Node.objects.count() == 1
    assert Node.objects.get().zone == zone


@pytest.mark.parametrize("case", ["spent", "expired", "revoked", "forged", "unknown"])
def test_bad_tokens_are_refused_and_create_nothing(cast: Cast, zone: Zone, case: str) -> None:
    token, full = new_token(zone, max_uses=1)
    expected = {
        "spent": "used up",
        "expired": "expired",
        "revoked": "revoked",
        "forged": "not valid",
        "unknown": "not valid",
    }[case]
    if case == "spent":
        enrolment.register_node(token_string=full, facts=facts())
    elif case == "expired":
        EnrolmentToken.objects.filter(pk=token.pk).update(
            expires_at=timezone.now() - datetime.timedelta(seconds=1)
        )
    elif case == "revoked":
        enrolment.revoke_enrolment_token(actor=None, token=token)
    elif case == "forged":
        full = f"umsnode_{token.prefix}_{'A' * 43}"
    else:
        full = f"umsnode_{'0' * 12}_{'A' * 43}"
    nodes_before = Node.objects.count()
    with pytest.raises(enrolment.EnrolmentRefused) as excinfo:
        enrolment.register_node(token_string=full, facts=facts())
    assert expected in excinfo.value.message
    assert excinfo.value.status == 403
    assert Node.objects.count() == nodes_before
    token.refresh_from_db()
    assert token.uses == (1 if case == "spent" else 0)
    if case != "unknown":
        refused = AuditRecord.objects.get(action="node.register_refused")
        assert refused.changes["reason"] == case
        assert refused.changes["token"] == token.prefix


def test_forged_and_unknown_tokens_get_the_same_answer(cast: Cast, zone: Zone) -> None:
    token, _full = new_token(zone)
    answers = []
    for candidate in (f"umsnode_{token.prefix}_{'B' * 43}", f"umsnode_{'f' * 12}_{'B' * 43}"):
        response = post(api_body(candidate))
        answers.append((response.status_code, response.json()))
    assert answers[0] == answers[1]
    assert answers[0][0] == 403


@pytest.mark.django_db(transaction=True)
def test_concurrent_registrations_never_exceed_max_uses(cast: Cast, zone: Zone) -> None:
    token, full = new_token(zone, max_uses=2)
    workers = 6
    barrier = threading.Barrier(workers)
    outcomes: list[str] = []
    lock = threading.Lock()

    def register() -> None:
        try:
            barrier.wait(timeout=30)
            enrolment.register_node(token_string=full, facts=facts())
            result = "created"
        except enrolment.EnrolmentRefused as exc:
            result = exc.reason
        finally:
            connection.close()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=register) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["created", "created", "spent", "spent", "spent", "spent"]
    token.refresh_from_db()
    assert token.uses == 2
    assert Node.objects.filter(enrolled_with_id=token.pk).count() == 2


# ----------------------------------------------------------------------------- the endpoint


def test_endpoint_registers_then_recognises_the_node(cast: Cast, zone: Zone) -> None:
    _token, full = new_token(zone)
    key = new_host_key()
    response = post(api_body(full, key))
    assert response.status_code == 201, response.content
    body = response.json()
    node = Node.objects.get()
    assert body == {"node": node.pk, "status": "pending", "message": body["message"]}
    assert "waiting for approval" in body["message"]
    assert node.memory_mb == 7936
    assert node.disks[0]["size_kb"] == 41152736
    again = post(api_body(full, key))
    assert again.status_code == 200, again.content
    assert again.json()["node"] == node.pk
    assert "already registered" in again.json()["message"]
    assert Node.objects.count() == 1


def test_endpoint_needs_no_login_and_ignores_credentials(cast: Cast, zone: Zone) -> None:
    _token, full = new_token(zone)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer ums_000000000000_forged")
    response = client.post(REGISTER, api_body(full), format="json")
    assert response.status_code == 201, response.content


def test_endpoint_refuses_a_spent_token_with_a_message(cast: Cast, zone: Zone) -> None:
    _token, full = new_token(zone, max_uses=1)
    assert post(api_body(full)).status_code == 201
    response = post(api_body(full))  # a different node (new host key)
    assert response.status_code == 403
    assert "used up" in response.json()["message"]
    assert Node.objects.count() == 1


LONG_LABEL = "a" * 64


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"hostname": 123}, "hostname"),
        ({"hostname": "x" * 254}, "hostname"),
        ({"hostname": f"{LONG_LABEL}.example.org"}, "hostname"),
        ({"hostname": "bad_name.example.org"}, "hostname"),
        ({"hostname": "mx1\x00.example.org"}, "hostname"),
        ({"hostname": "mx1.example.org\n"}, "hostname"),
        ({"sshPort": "22"}, "sshPort"),
        ({"sshPort": 70000}, "sshPort"),
        ({"sshPort": 0}, "sshPort"),
        ({"sshPort": True}, "sshPort"),
        ({"sshAddress": "not-an-ip"}, "sshAddress"),
        ({"sshAddress": "0.0.0.0"}, "sshAddress"),  # noqa: S104
        ({"addresses": "192.0.2.1"}, "addresses"),
        ({"addresses": ["192.0.2.1", "999.1.1.1"]}, "addresses"),
        ({"addresses": ["192.0.2.1"] * 65}, "addresses"),
        ({"hostKeys": "ssh-ed25519 AAAA"}, "hostKeys"),
        ({"hostKeys": []}, "hostKeys"),
        ({"hostKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDeadBeef"]}, "hostKeys"),
        (
            {"hostKeys": ["ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIEWuUQv6JUqCZ8l3rD0Ao1HEBQ8TGQ0t"]},
            "hostKeys",
        ),
        ({"hostKeys": ["ssh-ed25519 AAAA\x00"]}, "hostKeys"),
        ({"osId": "debian; rm -rf /"}, "osId"),
        ({"osVersion": "1" * 33}, "osVersion"),
        ({"osVersion": "12\n"}, "osVersion"),
        ({"osPrettyName": "Debian\x00"}, "osPrettyName"),
        ({"cpus": 10**30}, "cpus"),
        ({"cpus": -1}, "cpus"),
        ({"cpus": 2.5}, "cpus"),
        ({"memoryMb": 10**30}, "memoryMb"),
        ({"memoryMb": "lots"}, "memoryMb"),
        ({"disks": {"mount": "/"}}, "disks"),
        ({"disks": [{"mount": "/", "sizeKb": 2**60}]}, "disks"),
        ({"disks": [{"mount": "/", "sizeKb": "1G"}]}, "disks"),
        ({"disks": [{"mount": "relative"}]}, "disks"),
        ({"disks": [{"mount": "/", "surprise": 1}]}, "disks"),
        ({"disks": [{"mount": "/"}] * 65}, "disks"),
        ({"rootPassword": "x"}, "rootPassword"),
        ({"token": "not-a-token"}, "token"),
        ({"token": 12345}, "token"),
        ({"token": "umsnode_" + "0" * 12 + "_" + "A" * 43 + "\n"}, "token"),
    ],
)
def test_bad_facts_are_refused_field_by_field(
    cast: Cast, zone: Zone, overrides: dict[str, Any], field: str
) -> None:
    token, full = new_token(zone)
    body = api_body(full)
    body.update(overrides)
    response = post(body)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["message"]
    assert field in body["errors"], body
    assert not Node.objects.exists()
    token.refresh_from_db()
    assert token.uses == 0


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b'["a", "list"]',
        b'{"token": "umsnode_',
        b'"\\u0000"',
        b'{"cpus": 1e999}',
    ],
)
def test_malformed_bodies_are_400_not_500(cast: Cast, zone: Zone, raw: bytes) -> None:
    response = APIClient().post(REGISTER, raw, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["message"]
    assert not Node.objects.exists()


def test_missing_facts_are_listed(cast: Cast, zone: Zone) -> None:
    _token, full = new_token(zone)
    response = post({"token": full})
    assert response.status_code == 400
    assert {"hostname", "sshAddress", "hostKeys"} <= set(response.json()["errors"])


def test_registration_is_throttled_per_address(settings: Any, cast: Cast, zone: Zone) -> None:
    settings.NODE_REGISTER_THROTTLE_RATE = "3/minute"
    address = f"192.0.2.{uuid.uuid4().int % 200 + 20}"
    cache.delete(f"throttle_node-register_{address}")
    codes = []
    for index in range(4):
        # A forged X-Forwarded-For must not give each attempt a fresh identity.
        response = post(
            {"token": "x"}, REMOTE_ADDR=address, HTTP_X_FORWARDED_FOR=f"203.0.113.{index}"
        )
        codes.append(response.status_code)
    assert codes == [400, 400, 400, 429]
    assert "throttled" in response.json()["message"].lower()
    cache.delete(f"throttle_node-register_{address}")
