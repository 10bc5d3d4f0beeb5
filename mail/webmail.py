"""Two-factor login for webmail: a TOTP seed per mailbox, enrolled by an administrator.

The seed is stored Fernet-encrypted (ums.crypto) and rendered onto the webmail nodes,
where the ``ums`` Roundcube plugin asks for the current code at login (see
deploy/services/roundcube). Roundcube has no packaged two-factor plugin in Debian, so the
check is the plugin's own (RFC 6238, 30-second steps, one step of drift).
"""

from __future__ import annotations

from typing import Any

from tenants import permissions as perms
from tenants.twofactor import totp
from ums import auditing, crypto
from ums.actions import action, require_in_scope, require_permission

from .models import Mailbox
from .signals import announce


def _locked(mailbox: Mailbox) -> Mailbox:
    return Mailbox.objects.select_for_update().select_related("customer").get(pk=mailbox.pk)


@action
def enable_webmail_two_factor(*, actor: Any, mailbox: Mailbox) -> dict[str, str]:
    """Give ``mailbox`` a new TOTP seed (replacing any earlier one).

    Returns the seed and its ``otpauth://`` URI, shown once to hand to the user; only the
    encrypted seed is kept.
    """
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(mailbox, actor)
    mailbox = _locked(mailbox)
    secret = totp.new_secret()
    replaced = bool(mailbox.webmail_totp_secret)
    mailbox.webmail_totp_secret = crypto.encrypt(secret)
    mailbox.save(update_fields=["webmail_totp_secret", "updated_at"])
    auditing.record(
        "mail.mailbox.webmail_2fa_enable",
        obj=mailbox,
        customer=mailbox.customer,
        after={"replaced": replaced},
    )
    announce(mailbox.customer_path, [mailbox.domain_id], kind="mailbox")
    return {"secret": secret, "uri": totp.provisioning_uri(secret, mailbox.email)}


@action
def disable_webmail_two_factor(*, actor: Any, mailbox: Mailbox) -> None:
    """Webmail asks ``mailbox`` for its password only again."""
    require_permission(actor, perms.MAIL_MANAGE)
    require_in_scope(mailbox, actor)
    mailbox = _locked(mailbox)
    if not mailbox.webmail_totp_secret:
        return
    mailbox.webmail_totp_secret = ""
    mailbox.save(update_fields=["webmail_totp_secret", "updated_at"])
    auditing.record("mail.mailbox.webmail_2fa_disable", obj=mailbox, customer=mailbox.customer)
    announce(mailbox.customer_path, [mailbox.domain_id], kind="mailbox")
