"""Names that reach Postfix and Courier: domains, local parts, addresses, selectors."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from mail import validators


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("$(id).example.com", "cannot contain"),
        ("`id`.example.com", "cannot contain"),
        ("a..b", "empty labels"),
        (".example.com", "empty labels"),
        ("x" * 250 + ".com", "at most 253"),
        ("a" * 64 + ".example.com", "1 to 63"),
        ("com", "bare top-level"),
        ("-bad.example.com", "hyphen"),
        ("bad-.example.com", "hyphen"),
        ("under_score.example.com", "Underscores"),
        ("exa mple.com", "spaces"),
        (" example.com", "spaces"),
        ("example.com.", "final dot"),
        ("example.123", "top-level"),
        ("1.2.3.4", "top-level"),
        ("exa\x00mple.com", "Control"),
        ("exa\nmple.com", "Control"),
        ("example.com/x", "cannot contain"),
        ("ex;ample.com", "cannot contain"),
        ("☃\u200d.example", "Control"),
        ("", "Enter a domain"),
    ],
)
def test_bad_domains_are_refused_with_a_clear_message(value: str, needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        validators.normalise_domain(value)
    assert needle.lower() in " ".join(info.value.messages).lower()


def test_internationalised_domains_are_stored_as_idna_and_shown_in_unicode() -> None:
    assert validators.normalise_domain("München.Example") == (
        "xn--mnchen-3ya.example",
        "münchen.example",
    )
    # IDNA 2008: ß is kept (IDNA 2003 would have mapped it to "ss").
    assert validators.normalise_domain("straße.de")[0] == "xn--strae-oqa.de"
    assert validators.normalise_domain("xn--mnchen-3ya.example")[1] == "münchen.example"
    assert validators.normalise_domain("Example.COM") == ("example.com", "example.com")


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("john smith", "spaces"),
        ('"john"', "Quoted"),
        ("jo\x07hn", "Control"),
        ("jo\nhn", "Control"),
        ("john..smith", "two dots"),
        (".john", "start or end with a dot"),
        ("john.", "start or end with a dot"),
        ("a" * 65, "at most 64"),
        ("-rf", "starting with a letter or digit"),
        ("john+tag", "reserved"),
        ("jo/hn", "Use only"),
        ("jo|hn", "Use only"),
        ("jöhn", "cannot contain"),
        ("a@b", "cannot contain"),
        ("", "Enter the part"),
    ],
)
def test_bad_local_parts_are_refused(value: str, needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        validators.normalise_local_part(value)
    assert needle.lower() in " ".join(info.value.messages).lower()


def test_good_local_parts_are_lowercased() -> None:
    assert validators.normalise_local_part("John.Smith") == "john.smith"
    assert validators.normalise_local_part("a_b-c.9") == "a_b-c.9"
    assert validators.normalise_local_part("a" * 64) == "a" * 64


def test_external_targets_may_use_plus_but_not_pipes() -> None:
    assert validators.normalise_address("Jane+News@Example.ORG") == "jane+news@example.org"
    for bad in ("|/bin/sh@example.org", "a@b", "a,b@example.org", "x@$(id).org", "no-at-sign"):
        with pytest.raises(ValidationError):
            validators.normalise_address(bad)


@pytest.mark.parametrize(
    "value", ["", "Sel", "sel_1", "-sel", "sel-", "se.l", "a" * 64, "s l", "s\x00"]
)
def test_bad_selectors_are_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        validators.normalise_selector(value)


def test_good_selectors() -> None:
    assert validators.normalise_selector("s202611") == "s202611"
    assert validators.normalise_selector("mail-1") == "mail-1"


@pytest.mark.parametrize("value", ["../etc", "a/../b", "*", "a%b", ".hidden", " x", "x\n"])
def test_bad_folders_are_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        validators.validate_folder(value)
