"""Password rules of the project beyond Django's own (listed in AUTH_PASSWORD_VALIDATORS).

Every way an administrator's password is set (``createadmin``, the portal's forms, the
API, a reset by mail) runs Django's ``validate_password``, so a rule here holds everywhere.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

# Cc: C0/C1 control characters (NUL, tab, newline, escape, DEL, ...); Zl/Zp: line and
# paragraph separators. None can be typed reliably at a login form, and some break the
# terminals and logs a password may pass through.
REFUSED_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


class ControlCharacterValidator:
    """Refuses passwords containing control characters or line separators."""

    def validate(self, password: str, user: Any = None) -> None:
        if any(unicodedata.category(ch) in REFUSED_CATEGORIES for ch in password):
            raise ValidationError(
                _("The password must not contain control characters such as tabs or line breaks."),
                code="password_control_characters",
            )

    def get_help_text(self) -> str:
        return _("Your password cannot contain control characters such as tabs or line breaks.")
