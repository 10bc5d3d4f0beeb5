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
