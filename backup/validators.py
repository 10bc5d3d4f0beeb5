"""Validators of backup target fields: every value is checked before it is stored."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

# AWS bucket naming rules: 3-63 characters, lowercase letters, digits, dots and hyphens,
# starting and ending with a letter or digit, no "..", not an IP address.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_HOST = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
# SMB share and user names: no path separators, wildcards or quotes.
_SHARE = re.compile(r"^[A-Za-z0-9_$][A-Za-z0-9_.$ -]{0,79}$")
_ACCOUNT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@ -]{0,103}$")
_PATH_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}$")


def endpoint_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(_("Enter an http:// or https:// URL."), code="scheme")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValidationError(
            _("The URL must not contain credentials, a query or a fragment."), code="url"
        )
    if parts.path not in ("", "/"):
        raise ValidationError(_("The URL must not contain a path."), code="url")


def bucket_name(value: str) -> None:
    if not _BUCKET.match(value) or ".." in value or _is_ip(value):
        raise ValidationError(
            _(
                "3 to 63 lowercase letters, digits, dots and hyphens, starting and ending "
                "with a letter or digit (not an IP address)."
            ),
            code="bucket",
        )


def object_prefix(value: str) -> None:
    if value and not all(_PREFIX_PART.match(p) for p in value.strip("/").split("/")):
        raise ValidationError(
            _("Folders of letters, digits, dots, underscores and hyphens, separated by /."),
            code="prefix",
        )


def region(value: str) -> None:
    if value and not _REGION.match(value):
        raise ValidationError(_("Lowercase letters, digits and hyphens."), code="region")


def hostname(value: str) -> None:
    if not (_HOST.match(value) or _is_ip(value)):
        raise ValidationError(_("Enter a host name or an IP address."), code="host")


def share_name(value: str) -> None:
    if not _SHARE.match(value) or value != value.strip():
        raise ValidationError(_("Enter a share name without slashes."), code="share")


def account_name(value: str) -> None:
    if value and (not _ACCOUNT.match(value) or value != value.strip()):
        raise ValidationError(_("Letters, digits and . _ @ - only."), code="account")


def relative_path(value: str) -> None:
    if value and not all(_PATH_PART.match(p) for p in value.strip("/").split("/")):
        raise ValidationError(
            _("Folders of letters, digits, dots, underscores and hyphens, separated by /."),
            code="path",
        )


def absolute_path(value: str) -> None:
    # Each component must start with a letter, digit or underscore: "." and ".." cannot.
    parts = value.rstrip("/").split("/")
    if (
        not value.startswith("/")
        or len(value) > 1000
        or len(parts) < 2
        or not all(_PATH_PART.match(p) for p in parts[1:])
    ):
        raise ValidationError(
            _("Enter an absolute path such as /mnt/backup (no . or .. components)."),
            code="path",
        )


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
