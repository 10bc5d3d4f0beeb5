"""Validators shared by models, forms and serializers."""

from __future__ import annotations

import unicodedata

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _


def no_control_characters(value: str) -> None:
    """Refuse control and format characters (NUL, newlines, bidi overrides) in a name.

    They break config files, log lines and CSV exports, and PostgreSQL rejects NUL outright.
    """
    if value.isascii() and value.isprintable():
        return  # printable ASCII is letters, digits, punctuation and space: nothing to find
    for char in value:
        if unicodedata.category(char) in {"Cc", "Cf", "Cs", "Co", "Cn"}:
            raise ValidationError(
                _("Control or invisible characters are not allowed (found U+%(code)04X)."),
                code="control_characters",
                params={"code": ord(char)},
            )


def no_control_characters_multiline(value: str) -> None:
    """As :func:`no_control_characters`, but line breaks and tabs are allowed (notes)."""
    no_control_characters(value.replace("\r\n", "").replace("\n", "").replace("\t", ""))


def not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError(_("This field cannot be blank."), code="blank")


def trimmed(value: str) -> None:
    if value != value.strip():
        raise ValidationError(_("Leading or trailing spaces are not allowed."), code="untrimmed")
