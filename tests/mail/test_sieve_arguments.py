"""Raw Sieve scripts: every folder and address argument is checked as rule mode checks it.

Each payload goes through every way a script arrives: the action, the API (raw create,
raw update and ``check``) and the portal's raw form. Nothing is stored, and the error names
the line and the argument.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from mail import actions
from mail.models import SieveScript
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain, make_mailbox
from tests.portal.conftest import login  # noqa: F401

pytestmark = pytest.mark.django_db

FILEINTO = 'require ["fileinto", "copy", "mailbox", "imap4flags"];\nkeep;\n'

# (script, line, what the message must contain)
BAD = [
    (FILEINTO + 'fileinto "../x";', 3, "“../x”"),
    (FILEINTO + 'fileinto "/etc/x";', 3, "“/etc/x”"),
    (FILEINTO + 'fileinto "../../../../etc/passwd";', 3, "etc/passwd"),
    (FILEINTO + 'if true {\n    fileinto :copy "../x";\n}', 4, "“../x”"),
    (FILEINTO + 'fileinto :create "Work/../../x";', 3, "Work/../../x"),
    (FILEINTO + 'fileinto :flags "\\\\Seen" ".hidden";', 3, "“.hidden”"),
    (FILEINTO + 'fileinto "";', 3, "Enter a folder name"),
    (FILEINTO + 'fileinto "a\tb";', 3, "Control"),
    (FILEINTO + 'fileinto "' + "x" * 201 + '";', 3, "200"),
    (FILEINTO + 'fileinto "Work*";', 3, "*"),
    (FILEINTO + "fileinto text:\n/etc/x\n.\n;", 3, "/etc/x"),
    ('redirect "not-an-address";', 1, "not-an-address"),
    ('require "copy";\nredirect :copy "root@localhost";', 2, "root@localhost"),
    ('redirect "a@b..example";', 1, "a@b..example"),
    ('require "vacation";\nvacation :from "x@../etc" "away";', 2, "vacation from"),
    ('require "vacation";\nvacation :addresses ["ok@example.org", "bad"] "away";', 2, "“bad”"),
    ('require "enotify";\nnotify "xmpp:someone@example.org";', 2, "mailto"),
    ('require "enotify";\nnotify :from "me@" "mailto:a@example.org";', 2, "notify from"),
    ('require ["fileinto", "variables"];\nset "f" "../x";\nfileinto "${f}";', 3, "variables"),
    ('require "variables";\nset "a" "x@example.org";\nredirect "${a}";', 3, "variables"),
    ('include :personal "other";', 1, "include"),
]
GOOD = (
    'require ["fileinto", "copy", "mailbox", "vacation", "enotify"];\n'
    'fileinto "INBOX.Work";\nfileinto :copy :create "Projects/2026";\n'
    'redirect :copy "someone+tag@example.org";\n'
    'vacation :from "Alice <alice@example.org>" :addresses ["alice@example.org"] "away";\n'
    'notify :from "alice@example.org" "mailto:bob@example.org?subject=hello";\n'
)


@pytest.fixture
def mailbox(cast: Cast) -> Any:
    return make_mailbox(make_domain(cast.ministry, "ministry.example"), "alice")


def _assert_names(message: str, line: int, needle: str) -> None:
    if needle != "include":  # refused by the parser itself, as an unknown command
        assert f"line {line}:" in message
    assert needle in message


@pytest.mark.parametrize(("script", "line", "needle"), BAD)
def test_action_refuses_and_stores_nothing(mailbox, script: str, line: int, needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        actions.create_sieve_script(
            actor=None, mailbox=mailbox, name="x", mode="raw", script=script
        )
    _assert_names(" ".join(info.value.message_dict["script"]), line, needle)
    assert not SieveScript.objects.exists()


@pytest.mark.parametrize(("script", "line", "needle"), BAD)
def test_api_raw_create_update_and_check_refuse(
    cast: Cast, mailbox, script: str, line: int, needle: str
) -> None:
    client = token_client(cast.sub_admin)
    url = reverse("mail-sieve-script-list")
    response = client.post(
        url,
        {"mailbox": mailbox.pk, "name": "x", "mode": "raw", "script": script},
        format="json",
    )
    assert response.status_code == 400
    _assert_names(" ".join(response.json()["errors"]["script"]), line, needle)
    assert not SieveScript.objects.exists()

    created = client.post(
        url, {"mailbox": mailbox.pk, "name": "ok", "mode": "raw", "script": "keep;"}, format="json"
    )
    assert created.status_code == 201, created.json()
    detail = reverse("mail-sieve-script-detail", args=[created.json()["id"]])
    response = client.patch(detail, {"script": script}, format="json")
    assert response.status_code == 400
    assert SieveScript.objects.get().script == "keep;"

    check = client.post(reverse("mail-sieve-script-check"), {"script": script}, format="json")
    assert check.status_code == 200
    body = check.json()
    assert body["valid"] is False
    _assert_names(body["error"], line, needle)


@pytest.mark.parametrize(("script", "line", "needle"), BAD)
def test_portal_raw_form_refuses(
    cast: Cast,
    mailbox,
    login: Callable[..., Client],  # noqa: F811
    script: str,
    line: int,
    needle: str,
) -> None:
    client = login(cast.sub_admin)
    url = reverse("mail:mailbox-filters-raw", args=[mailbox.pk])
    response = client.post(url, {"name": "x", "script": script, "is_active": "on"})
    assert response.status_code == 200
    _assert_names(str(response.context["raw_form"].errors), line, needle)
    assert not SieveScript.objects.exists()


def test_literal_folders_and_addresses_are_accepted_everywhere(cast: Cast, mailbox) -> None:
    client = token_client(cast.sub_admin)
    check = client.post(reverse("mail-sieve-script-check"), {"script": GOOD}, format="json")
    assert check.json() == {"valid": True, "error": None}
    response = client.post(
        reverse("mail-sieve-script-list"),
        {"mailbox": mailbox.pk, "name": "x", "mode": "raw", "script": GOOD},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert SieveScript.objects.get().script == GOOD
