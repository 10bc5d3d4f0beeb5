"""Translated labels for audit action codes.

Records keep the raw code (``mail.mailbox.create``): it is what the API returns, what the
filter matches by prefix and what the CSV export writes. The portal shows this label
instead, in the reader's language; a code not listed here is shown as it is.
"""

from __future__ import annotations

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

ACTION_LABELS: dict[str, Promise] = {
    # sign-in and sessions
    "auth.login": _("Signed in"),
    "auth.login_failed": _("Failed sign-in"),
    "auth.logout": _("Signed out"),
    "auth.ldap_login": _("Signed in through LDAP"),
    "auth.ldap_conflict": _("LDAP sign-in refused: name conflict"),
    "auth.ldap_unreachable": _("LDAP directory unreachable"),
    "auth.saml_login": _("Signed in through SAML"),
    "auth.saml_failed": _("Failed SAML sign-in"),
    "auth.second_factor_passed": _("Second factor passed"),
    "auth.second_factor_failed": _("Second factor failed"),
    "auth.recovery_code_used": _("Recovery code used"),
    "auth.session_expired": _("Session expired"),
    "auth.session_revoked": _("Session ended"),
    # customers, administrators, tokens, limits, identity
    "customer.create": _("Customer created"),
    "customer.update": _("Customer changed"),
    "customer.move": _("Customer moved"),
    "customer.disable": _("Customer disabled"),
    "customer.enable": _("Customer enabled"),
    "customer.delete": _("Customer deleted"),
    "customer.two_factor_policy": _("Two-factor policy changed"),
    "administrator.create": _("Administrator created"),
    "administrator.update": _("Administrator changed"),
    "administrator.password": _("Administrator password set"),
    "administrator.delete": _("Administrator deleted"),
    "token.create": _("API token created"),
    "token.revoke": _("API token revoked"),
    "token.use": _("API token used"),
    "limits.update": _("Resource limits changed"),
    "identity.ldap_saved": _("LDAP settings saved"),
    "identity.ldap_deleted": _("LDAP settings removed"),
    "identity.ldap_created": _("LDAP settings created"),
    "identity.saml_saved": _("SAML settings saved"),
    "identity.saml_deleted": _("SAML settings removed"),
    "twofactor.totp_enrolled": _("Authenticator app added"),
    "twofactor.totp_removed": _("Authenticator app removed"),
    "twofactor.key_added": _("Security key added"),
    "twofactor.key_removed": _("Security key removed"),
    "twofactor.recovery_codes": _("Recovery codes generated"),
    "twofactor.reset": _("Second factors reset"),
    # mail
    "mail.domain.create": _("Domain created"),
    "mail.domain.update": _("Domain changed"),
    "mail.domain.delete": _("Domain deleted"),
    "mail.domain_alias.create": _("Domain alias created"),
    "mail.domain_alias.update": _("Domain alias changed"),
    "mail.domain_alias.delete": _("Domain alias deleted"),
    "mail.domain_policy.update": _("Domain policy changed"),
    "mail.domain_policy.reset": _("Domain policy reset"),
    "mail.customer_policy.update": _("Customer mail policy changed"),
    "mail.dkim.create": _("DKIM key created"),
    "mail.dkim.rotate": _("DKIM key rotated"),
    "mail.dkim.retire": _("DKIM key retired"),
    "mail.dkim.delete": _("DKIM key deleted"),
    "mail.mailbox.create": _("Mailbox created"),
    "mail.mailbox.update": _("Mailbox changed"),
    "mail.mailbox.password": _("Mailbox password set"),
    "mail.mailbox.delete": _("Mailbox deleted"),
    "mail.alias.create": _("Alias created"),
    "mail.alias.update": _("Alias changed"),
    "mail.alias.delete": _("Alias deleted"),
    "mail.autoresponder.create": _("Auto-responder created"),
    "mail.autoresponder.update": _("Auto-responder changed"),
    "mail.autoresponder.delete": _("Auto-responder deleted"),
    "mail.sieve.create": _("Mail filter created"),
    "mail.sieve.update": _("Mail filter changed"),
    "mail.sieve.delete": _("Mail filter deleted"),
    "mail.import.request": _("CSV import requested"),
    "mail.import.apply": _("CSV import applied"),
    "domain.placed": _("Domain placed on nodes"),
    # servers
    "zone.create": _("Zone created"),
    "zone.update": _("Zone changed"),
    "zone.delete": _("Zone deleted"),
    "enrolment_token.create": _("Enrolment token created"),
    "enrolment_token.revoke": _("Enrolment token revoked"),
    "node.register": _("Node registered"),
    "node.reregister": _("Node registered again"),
    "node.register_refused": _("Node registration refused"),
    "node.approve": _("Node approved"),
    "node.update": _("Node changed"),
    "node.action": _("Node action requested"),
    "node.converged": _("Node configuration applied"),
    "node.key_rotated": _("Controller key rotated"),
    "node.host_key_mismatch": _("Node host key changed"),
    "node.host_key_accept": _("New host key accepted"),
    "node.status.active": _("Node is active"),
    "node.status.degraded": _("Node is degraded"),
    "node.status.offline": _("Node is offline"),
    # spam hold
    "spamhold.ingested": _("Held mail collected"),
    "spamhold.read_content": _("Held message read"),
    "spamhold.release": _("Held mail released"),
    "spamhold.release_allow": _("Held mail released, sender allowed"),
    "spamhold.delete": _("Held mail deleted"),
    "spamhold.delete_block": _("Held mail deleted, sender blocked"),
    "spamhold.expire": _("Held mail expired"),
    "spamhold.gone": _("Held mail already gone from the node"),
    "spamhold.release_failed": _("Releasing held mail failed"),
    "spamhold.delete_failed": _("Deleting held mail failed"),
    "spamhold.bulk": _("Bulk action on held mail"),
    "spamhold.retention.set": _("Hold retention set"),
    "spamhold.retention.reset": _("Hold retention reset"),
}


def label(action: str) -> str:
    """The label of ``action`` in the active language, or the code itself."""
    found = ACTION_LABELS.get(action)
    return str(found) if found is not None else action
