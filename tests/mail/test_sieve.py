"""Sieve scripts: every one parsed by a real parser; rules generate valid Sieve."""

from __future__ import annotations

import datetime

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from mail import actions, sieve
from mail.models import SieveScript
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain, make_mailbox

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("script", "needle"),
    [
        ("if foo { bar; }", "unknown command"),
        ('fileinto "x";', "extension 'fileinto' not loaded"),
        ('require "vnd.dovecot.pipe"; pipe "x";', ""),
        ("keep; }", ""),
        ('if header :contains "subject" "x" { discard; ', ""),
        ("", "Enter a Sieve script"),
        ("keep;\x00", "control characters"),
    ],
)
def test_invalid_scripts_are_refused_with_the_parser_message(
    cast: Cast, script: str, needle: str
) -> None:
    mailbox = make_mailbox(make_domain(cast.ministry, "ministry.example"), "alice")
    with pytest.raises(ValidationError) as info:
        actions.create_sieve_script(
            actor=None, mailbox=mailbox, name="x", mode="raw", script=script
        )
    message = " ".join(info.value.message_dict["script"])
    assert needle in message
    assert not SieveScript.objects.exists()


def test_rules_generate_a_script_the_parser_accepts(cast: Cast) -> None:
    mailbox = make_mailbox(make_domain(cast.ministry, "ministry.example"), "alice")
    rules = [
        {
            "name": 'Tricky "quotes" \\ and ünïcode',
            "match": "any",
            "conditions": [
                {"field": "from", "op": "contains", "value": 'news@"evil"\\x'},
                {"field": "to", "op": "is", "value": "me@example.org"},
                {"field": "header", "header": "X-Spam-Flag", "op": "matches", "value": "YES*"},
                {"field": "size", "op": "over", "value": "10m"},
            ],
            "actions": [
                {"type": "fileinto", "folder": "Archive/2026 Ünïcode"},
                {"type": "mark_read"},
                {"type": "redirect", "address": "copy@example.org", "copy": True},
                {"type": "stop"},
            ],
        },
        {"name": "", "match": "all", "conditions": [], "actions": [{"type": "discard"}]},
    ]
    script = actions.create_sieve_script(actor=None, mailbox=mailbox, name="sort", rules=rules)
    assert sieve.parse_error(script.script) is None
    assert 'require ["fileinto", "imap4flags", "copy"];' in script.script
    assert "size :over 10M" in script.script
    assert '\\"evil\\"' in script.script


@pytest.mark.parametrize(
    "rules",
    [
        "not a list",
        [{"actions": []}],
        [
            {
                "conditions": [{"field": "body", "op": "is", "value": "x"}],
                "actions": [{"type": "stop"}],
            }
        ],
        [
            {
                "conditions": [{"field": "size", "op": "over", "value": "lots"}],
                "actions": [{"type": "stop"}],
            }
        ],
        [{"conditions": [], "actions": [{"type": "fileinto", "folder": "../etc"}]}],
        [{"conditions": [], "actions": [{"type": "redirect", "address": "not-an-address"}]}],
        [{"conditions": [], "actions": [{"type": "vacation"}]}],
        [
            {
                "conditions": [
                    {"field": "header", "header": "Bad Header:", "op": "is", "value": "x"}
                ],
                "actions": [{"type": "stop"}],
            }
        ],
        [{"conditions": [], "actions": [{"type": "stop"}], "extra": 1}],
    ],
)
def test_bad_rules_are_refused(cast: Cast, rules: object) -> None:
    mailbox = make_mailbox(make_domain(cast.ministry, "ministry.example"), "alice")
    with pytest.raises(ValidationError) as info:
        actions.create_sieve_script(actor=None, mailbox=mailbox, name="x", rules=rules)
    assert "rules" in info.value.message_dict


def test_only_one_active_script_per_mailbox(cast: Cast) -> None:
    mailbox = make_mailbox(make_domain(cast.ministry, "ministry.example"), "alice")
    first = actions.create_sieve_script(
        actor=None, mailbox=mailbox, name="a", mode="raw", script="keep;"
    )
    actions.create_sieve_script(actor=None, mailbox=mailbox, name="b", mode="raw", script="keep;")
    first.refresh_from_db()
    assert not first.is_active
    assert SieveScript.objects.filter(mailbox=mailbox, is_active=True).count() == 1


def test_check_endpoint_reports_without_saving(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    url = reverse("mail-sieve-script-check")
    assert client.post(url, {"script": "keep;"}, format="json").json() == {
        "valid": True,
        "error": None,
    }
    body = client.post(url, {"script": "if foo { bar; }"}, format="json").json()
    assert body["valid"] is False and "unknown command" in body["error"]


def test_autoresponder_script_skips_lists_and_is_valid(cast: Cast) -> None:
    mailbox = make_mailbox(make_domain(cast.ministry, "ministry.example"), "alice")
    row = actions.set_autoresponder(
        actor=None,
        mailbox=mailbox,
        is_enabled=True,
        subject='Away "until" Monday',
        body="I am away.\nBack soon.",
        start_date=datetime.date(2026, 12, 1),
        end_date="2026-12-24",
        interval_days=3,
    )
    script = actions.autoresponder_script(row, mailbox.email)
    assert sieve.parse_error(script) is None
    assert '"list-id"' in script and '"bulk"' in script and ":days 3" in script
    with pytest.raises(ValidationError) as info:
        actions.set_autoresponder(actor=None, mailbox=mailbox, end_date="2026-11-01")
    assert "end_date" in info.value.message_dict
    with pytest.raises(ValidationError):
        actions.set_autoresponder(actor=None, mailbox=mailbox, subject="Line\nbreak")
