"""Channel signing keys: parsed on the controller before anything reaches a node.

An operator gives a channel's ASCII-armoured public key and/or its key id. The key is
read with ``gpg --show-keys --with-colons`` in a throw-away GNUPGHOME (nothing is
imported on the controller); garbage, a secret key, several unrelated keys or a key id
the key does not have are refused as field errors. Only the key id alone (no key) is
refused too: the node must be given the key to import, a bare id verifies nothing.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from tenants import permissions as perms
from ums import auditing
from ums.actions import require_permission
from ums.operators import is_operator

from . import _CHANNEL

_KEY_ID = re.compile(r"^(0x)?([0-9A-Fa-f]{8}|[0-9A-Fa-f]{16}|[0-9A-Fa-f]{40})$")
_ARMOUR = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
MAX_KEY_BYTES = 64 * 1024


def read_key(armoured: str) -> list[tuple[str, str]]:
    """``[(primary fingerprint, signing fingerprint), ...]`` of the one key in
    ``armoured``; ValueError with a reason for anything else."""
    text = armoured.strip()
    if not text.startswith(_ARMOUR) or len(text.encode()) > MAX_KEY_BYTES:
        raise ValueError(_("Not an ASCII-armoured OpenPGP public key."))
    with tempfile.TemporaryDirectory(prefix="ums-gpg-") as home:
        proc = subprocess.run(
            ["gpg", "--homedir", home, "--batch", "--no-tty", "--with-colons", "--show-keys"],
            input=text.encode(),
            capture_output=True,
            timeout=30,
            check=False,
        )
    if proc.returncode != 0:
        raise ValueError(_("GnuPG cannot read this key."))
    rows = [line.split(":") for line in proc.stdout.decode(errors="replace").splitlines()]
    if any(r[0] == "sec" for r in rows):
        raise ValueError(_("This is a secret key: give the public key only."))
    primaries = [r for r in rows if r[0] == "pub"]
    if len(primaries) != 1:
        raise ValueError(_("Give exactly one public key."))
    signing: list[tuple[str, str]] = []
    primary = ""
    kind = ""
    caps = ""
    for row in rows:
        if row[0] in ("pub", "sub"):
            kind = row[0]
            # Revoked or expired keys sign nothing sa-update should trust.
            usable = len(row) > 11 and row[1] not in ("r", "e")
            caps = row[11].lower() if usable else ""
        elif row[0] == "fpr" and kind:
            fpr = row[9].upper()
            if kind == "pub":
                primary = fpr
            if "s" in caps:
                signing.append((primary, fpr))
            kind = ""
    if not signing:
        raise ValueError(_("This key cannot sign."))
    return signing


def trusted_ids(public_key: str, key_id: str) -> list[str]:
    """The fingerprints sa-update is to trust; ValidationError with field errors."""
    key_id = key_id.strip()
    if key_id and not _KEY_ID.match(key_id):
        raise ValidationError({"key_id": _("A key id is 8, 16 or 40 hexadecimal digits.")})
    if not public_key.strip():
        raise ValidationError(
            {"public_key": _("The channel's public key is needed: the node imports it.")}
        )
    try:
        signing = read_key(public_key)
    except ValueError as exc:
        raise ValidationError({"public_key": str(exc)}) from exc
    if not key_id:
        return [fpr for _primary, fpr in signing]
    wanted = _KEY_ID.match(key_id).group(2).upper()  # type: ignore[union-attr]
    chosen = [fpr for primary, fpr in signing if primary.endswith(wanted) or fpr.endswith(wanted)]
    if not chosen:
        raise ValidationError({"key_id": _("This key id is not a signing key of the key given.")})
    return chosen


def _require_operator(actor: Any) -> None:
    if actor is None:
        return
    require_permission(actor, perms.SERVERS_MANAGE)
    if not is_operator(actor):
        raise PermissionDenied(_("Only operators of the installation manage update channels."))


def set_channel_key(*, actor: Any, channel: str, public_key: str, key_id: str = "") -> Any:
    """Trust ``public_key`` (narrowed to ``key_id``) for ``channel``; audited."""
    from deploy.models import RuleChannelKey

    _require_operator(actor)
    if not _CHANNEL.match(channel or ""):
        raise ValidationError({"channel": _("Not a SpamAssassin channel name.")})
    fingerprints = trusted_ids(public_key, key_id)
    with transaction.atomic():
        row = RuleChannelKey.objects.select_for_update().filter(channel=channel).first()
        before = None if row is None else {"fingerprints": row.fingerprints}
        row = row or RuleChannelKey(channel=channel)
        row.public_key = public_key.strip() + "\n"
        row.key_id = key_id.strip()
        row.fingerprints = fingerprints
        row.updated_at = timezone.now()
        row.save()
        auditing.record(
            "rule_channel_key.set",
            obj=row,
            actor=actor,
            before=before,
            after={"channel": channel, "fingerprints": fingerprints},
        )
    return row


def delete_channel_key(*, actor: Any, channel: str) -> bool:
    from deploy.models import RuleChannelKey

    _require_operator(actor)
    with transaction.atomic():
        row = RuleChannelKey.objects.select_for_update().filter(channel=channel).first()
        if row is None:
            return False
        auditing.record(
            "rule_channel_key.delete",
            obj=row,
            actor=actor,
            before={"channel": channel, "fingerprints": row.fingerprints},
        )
        row.delete()
    return True


def node_keys(channels: list[str]) -> dict[str, dict[str, Any]]:
    """Per configured channel with a key: what the node imports and trusts."""
    from deploy.models import RuleChannelKey

    return {
        row.channel: {"key": row.public_key, "fingerprints": row.fingerprints}
        for row in RuleChannelKey.objects.filter(channel__in=channels)
    }
