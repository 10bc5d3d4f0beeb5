"""A mailbox has one active Sieve script: activating another through the API switches.

Creating a second active script, or setting ``isActive`` on an inactive one, makes it the
active one and deactivates the previous one in the same transaction (no uniqueness error),
each change audited.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit.models import AuditRecord
from mail.models import SieveScript
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain, make_mailbox

pytestmark = pytest.mark.django_db


def _active(mailbox_id: int) -> list[str]:
    return list(
        SieveScript.objects.filter(mailbox_id=mailbox_id, is_active=True).values_list(
            "name", flat=True
        )
    )


def test_second_active_script_switches_the_active_one(cast: Cast) -> None:
    mailbox = make_mailbox(make_domain(cast.ministry, "ministry.example"), "alice")
    client = token_client(cast.sub_admin)
    url = reverse("mail-sieve-script-list")
    ids = {}
    for name in ("first", "second"):
        response = client.post(
            url,
            {
                "mailbox": mailbox.pk,
                "name": name,
                "mode": "raw",
                "script": "keep;",
                "isActive": True,
            },
            format="json",
        )
        assert response.status_code == 201, response.content
        ids[name] = response.json()["id"]
        assert _active(mailbox.pk) == [name]
    # Back to the first by updating it: the second is switched off.
    response = client.patch(
        reverse("mail-sieve-script-detail", args=[ids["first"]]), {"isActive": True}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["isActive"] is True
    assert _active(mailbox.pk) == ["first"]
    assert (
        client.get(reverse("mail-sieve-script-detail", args=[ids["second"]])).json()["isActive"]
        is False
    )
    assert AuditRecord.objects.filter(action="mail.sieve.update").exists()
    # An inactive script can be created beside the active one without touching it.
    response = client.post(
        url,
        {
            "mailbox": mailbox.pk,
            "name": "third",
            "mode": "raw",
            "script": "keep;",
            "isActive": False,
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert _active(mailbox.pk) == ["first"]
    # A duplicate name is still refused, on the name field.
    response = client.post(
        url,
        {"mailbox": mailbox.pk, "name": "first", "mode": "raw", "script": "keep;"},
        format="json",
    )
    assert response.status_code == 400 and "name" in response.json()["errors"], response.content


def _script(client, mailbox_id: int, name: str, body: str, active: bool) -> int:
    response = client.post(
        reverse("mail-sieve-script-list"),
        {"mailbox": mailbox_id, "name": name, "mode": "raw", "script": body, "isActive": active},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()["id"]


def test_activate_and_deactivate_endpoints_switch_in_one_step_and_audit(cast: Cast) -> None:
    mailbox = make_mailbox(make_domain(cast.ministry, "ministry.example"), "alice")
    client = token_client(cast.sub_admin)
    first = _script(client, mailbox.pk, "first", "keep;", True)
    second = _script(client, mailbox.pk, "second", "discard;", False)
    assert _active(mailbox.pk) == ["first"]

    response = client.post(reverse("mail-sieve-script-activate", args=[second]))
    assert response.status_code == 200, response.content
    assert response.json()["isActive"] is True
    assert _active(mailbox.pk) == ["second"]
    row = AuditRecord.objects.filter(action="mail.sieve.activate").latest("pk")
    assert row.changes["before"] == {"active": ["first"]}
    assert row.changes["after"] == {"active": ["second"]}

    # Activating the active one again changes nothing and records nothing.
    client.post(reverse("mail-sieve-script-activate", args=[second]))
    assert AuditRecord.objects.filter(action="mail.sieve.activate").count() == 1

    response = client.post(reverse("mail-sieve-script-deactivate", args=[second]))
    assert response.status_code == 200 and response.json()["isActive"] is False
    assert _active(mailbox.pk) == []
    assert AuditRecord.objects.filter(action="mail.sieve.deactivate").count() == 1
    response = client.post(reverse("mail-sieve-script-activate", args=[first]))
    assert _active(mailbox.pk) == ["first"]

    # A viewer may not switch; another customer's administrator does not see the script.
    viewer = token_client(cast.ministry_viewer)
    assert viewer.post(reverse("mail-sieve-script-activate", args=[second])).status_code == 403
    sibling = token_client(cast.sibling_admin)
    assert sibling.post(reverse("mail-sieve-script-activate", args=[second])).status_code == 404
    assert _active(mailbox.pk) == ["first"]


def test_the_node_gets_only_the_active_script(cast: Cast) -> None:
    from deploy import desired
    from deploy.models import DomainPlacement
    from deploy.services.lda import SERVICE as LDA
    from servers import actions as server_actions
    from servers.models import Node, NodeStatus

    domain = make_domain(cast.ministry, "ministry.example")
    mailbox = make_mailbox(domain, "alice")
    client = token_client(cast.sub_admin)
    first = _script(client, mailbox.pk, "first", 'require ["fileinto"];\nfileinto "One";\n', True)
    _script(client, mailbox.pk, "second", 'require ["fileinto"];\nfileinto "Two";\n', True)
    zone = server_actions.create_zone(actor=None, customer=cast.government, name="DC")
    node = Node.objects.create(
        customer=cast.government,
        customer_path=cast.government.path,
        zone=zone,
        hostname="imap1.example.org",
        ssh_address="192.0.2.30",
        status=NodeStatus.ACTIVE,
        roles=["imap"],
    )
    DomainPlacement.objects.update_or_create(domain=domain, defaults={"node": node})

    def user_scripts() -> list[bytes]:
        files = LDA.render(desired.build(node))
        return [f.content for f in files if f.path.endswith("/alice/user.sieve")]

    assert user_scripts() == [b'require ["fileinto"];\nfileinto "Two";\n']
    client.post(reverse("mail-sieve-script-activate", args=[first]))
    assert user_scripts() == [b'require ["fileinto"];\nfileinto "One";\n']
    client.post(reverse("mail-sieve-script-deactivate", args=[first]))
    assert user_scripts() == []
