"""Translated labels for audit action codes.

Records keep the raw code (``mail.mailbox.create``): it is what the API returns, what the
filter matches by prefix and what the CSV export writes. The portal shows this label
instead, in the reader's language; a code not listed here is shown as it is.
"""

from __future__ import annotations

from django.utils.functional import Promise
from django.utils.translation import pgettext_lazy

# Labels carry the context "audit action" (spelled out in each call, so makemessages finds
# them): "Signed in" as an event reads differently from the column title "Signed in".
ACTION_LABELS: dict[str, Promise] = {
    # sign-in and sessions
    "auth.login": pgettext_lazy("audit action", "Signed in"),
    "auth.login_failed": pgettext_lazy("audit action", "Failed sign-in"),
    "auth.logout": pgettext_lazy("audit action", "Signed out"),
    "auth.ldap_login": pgettext_lazy("audit action", "Signed in through LDAP"),
    "auth.ldap_conflict": pgettext_lazy("audit action", "LDAP sign-in refused: name conflict"),
    "auth.ldap_unreachable": pgettext_lazy("audit action", "LDAP directory unreachable"),
    "auth.saml_login": pgettext_lazy("audit action", "Signed in through SAML"),
    "auth.saml_failed": pgettext_lazy("audit action", "Failed SAML sign-in"),
    "auth.second_factor_passed": pgettext_lazy("audit action", "Second factor passed"),
    "auth.second_factor_failed": pgettext_lazy("audit action", "Second factor failed"),
    "auth.recovery_code_used": pgettext_lazy("audit action", "Recovery code used"),
    "auth.session_expired": pgettext_lazy("audit action", "Session expired"),
    "auth.session_revoked": pgettext_lazy("audit action", "Session ended"),
    # customers, administrators, tokens, limits, identity
    "customer.create": pgettext_lazy("audit action", "Customer created"),
    "customer.update": pgettext_lazy("audit action", "Customer changed"),
    "customer.move": pgettext_lazy("audit action", "Customer moved"),
    "customer.disable": pgettext_lazy("audit action", "Customer disabled"),
    "customer.enable": pgettext_lazy("audit action", "Customer enabled"),
    "customer.delete": pgettext_lazy("audit action", "Customer deleted"),
    "customer.two_factor_policy": pgettext_lazy("audit action", "Two-factor policy changed"),
    "administrator.create": pgettext_lazy("audit action", "Administrator created"),
    "administrator.update": pgettext_lazy("audit action", "Administrator changed"),
    "administrator.password": pgettext_lazy("audit action", "Administrator password set"),
    "administrator.password_reset_requested": pgettext_lazy(
        "audit action", "Password reset requested"
    ),
    "administrator.password_reset_refused": pgettext_lazy("audit action", "Password reset refused"),
    "administrator.password_reset": pgettext_lazy("audit action", "Password reset by mail"),
    "administrator.delete": pgettext_lazy("audit action", "Administrator deleted"),
    "token.create": pgettext_lazy("audit action", "API token created"),
    "token.revoke": pgettext_lazy("audit action", "API token revoked"),
    "token.use": pgettext_lazy("audit action", "API token used"),
    "limits.update": pgettext_lazy("audit action", "Resource limits changed"),
    "identity.ldap_saved": pgettext_lazy("audit action", "LDAP settings saved"),
    "identity.ldap_deleted": pgettext_lazy("audit action", "LDAP settings removed"),
    "identity.ldap_created": pgettext_lazy("audit action", "LDAP settings created"),
    "identity.saml_saved": pgettext_lazy("audit action", "SAML settings saved"),
    "identity.saml_deleted": pgettext_lazy("audit action", "SAML settings removed"),
    "twofactor.totp_enrolled": pgettext_lazy("audit action", "Authenticator app added"),
    "twofactor.totp_removed": pgettext_lazy("audit action", "Authenticator app removed"),
    "twofactor.key_added": pgettext_lazy("audit action", "Security key added"),
    "twofactor.key_removed": pgettext_lazy("audit action", "Security key removed"),
    "twofactor.recovery_codes": pgettext_lazy("audit action", "Recovery codes generated"),
    "twofactor.reset": pgettext_lazy("audit action", "Second factors reset"),
    # mail
    "mail.domain.create": pgettext_lazy("audit action", "Domain created"),
    "mail.domain.update": pgettext_lazy("audit action", "Domain changed"),
    "mail.domain.delete": pgettext_lazy("audit action", "Domain deleted"),
    "mail.domain_alias.create": pgettext_lazy("audit action", "Domain alias created"),
    "mail.domain_alias.update": pgettext_lazy("audit action", "Domain alias changed"),
    "mail.domain_alias.delete": pgettext_lazy("audit action", "Domain alias deleted"),
    "mail.domain_policy.update": pgettext_lazy("audit action", "Domain policy changed"),
    "mail.domain_policy.reset": pgettext_lazy("audit action", "Domain policy reset"),
    "mail.customer_policy.update": pgettext_lazy("audit action", "Customer mail policy changed"),
    "mail.dkim.create": pgettext_lazy("audit action", "DKIM key created"),
    "mail.dkim.rotate": pgettext_lazy("audit action", "DKIM key rotated"),
    "mail.dkim.retire": pgettext_lazy("audit action", "DKIM key retired"),
    "mail.dkim.delete": pgettext_lazy("audit action", "DKIM key deleted"),
    "mail.dkim.dns": pgettext_lazy("audit action", "DKIM DNS record checked"),
    "mail.mailbox.create": pgettext_lazy("audit action", "Mailbox created"),
    "mail.mailbox.update": pgettext_lazy("audit action", "Mailbox changed"),
    "mail.mailbox.password": pgettext_lazy("audit action", "Mailbox password set"),
    "mail.mailbox.webmail_2fa_enable": pgettext_lazy(
        "audit action", "Webmail two-factor login enabled"
    ),
    "mail.mailbox.webmail_2fa_disable": pgettext_lazy(
        "audit action", "Webmail two-factor login disabled"
    ),
    "mail.mailbox.delete": pgettext_lazy("audit action", "Mailbox deleted"),
    "mail.alias.create": pgettext_lazy("audit action", "Alias created"),
    "mail.alias.update": pgettext_lazy("audit action", "Alias changed"),
    "mail.alias.delete": pgettext_lazy("audit action", "Alias deleted"),
    "mail.autoresponder.create": pgettext_lazy("audit action", "Auto-responder created"),
    "mail.autoresponder.update": pgettext_lazy("audit action", "Auto-responder changed"),
    "mail.autoresponder.delete": pgettext_lazy("audit action", "Auto-responder deleted"),
    "mail.sieve.create": pgettext_lazy("audit action", "Mail filter created"),
    "mail.sieve.update": pgettext_lazy("audit action", "Mail filter changed"),
    "mail.sieve.delete": pgettext_lazy("audit action", "Mail filter deleted"),
    "mail.sieve.activate": pgettext_lazy("audit action", "Mail filter activated"),
    "mail.sieve.deactivate": pgettext_lazy("audit action", "Mail filter deactivated"),
    "mail.import.request": pgettext_lazy("audit action", "CSV import requested"),
    "mail.import.apply": pgettext_lazy("audit action", "CSV import applied"),
    "domain.placed": pgettext_lazy("audit action", "Domain placed on nodes"),
    # servers
    "zone.create": pgettext_lazy("audit action", "Zone created"),
    "zone.update": pgettext_lazy("audit action", "Zone changed"),
    "zone.delete": pgettext_lazy("audit action", "Zone deleted"),
    "enrolment_token.create": pgettext_lazy("audit action", "Enrolment token created"),
    "enrolment_token.revoke": pgettext_lazy("audit action", "Enrolment token revoked"),
    "node.register": pgettext_lazy("audit action", "Node registered"),
    "node.reregister": pgettext_lazy("audit action", "Node registered again"),
    "node.register_refused": pgettext_lazy("audit action", "Node registration refused"),
    "node.approve": pgettext_lazy("audit action", "Node approved"),
    "node.update": pgettext_lazy("audit action", "Node changed"),
    "node.action": pgettext_lazy("audit action", "Node action requested"),
    "node.converged": pgettext_lazy("audit action", "Node configuration applied"),
    "chat_realm.create": pgettext_lazy("audit action", "Chat organisation created"),
    "chat_realm.update": pgettext_lazy("audit action", "Chat organisation changed"),
    "chat_realm.delete": pgettext_lazy("audit action", "Chat organisation deleted"),
    "chat_realm.sync": pgettext_lazy("audit action", "Chat organisation sync requested"),
    "backup_target.create": pgettext_lazy("audit action", "Backup target created"),
    "backup_target.update": pgettext_lazy("audit action", "Backup target changed"),
    "backup_target.delete": pgettext_lazy("audit action", "Backup target deleted"),
    "backup_target.test": pgettext_lazy("audit action", "Backup target tested"),
    "snapshot.request": pgettext_lazy("audit action", "Snapshot requested"),
    "snapshot_policy.update": pgettext_lazy("audit action", "Snapshot policy changed"),
    "backup_dump.request": pgettext_lazy("audit action", "Controller dump requested"),
    "backup_dump.written": pgettext_lazy("audit action", "Controller dump written"),
    "backup_dump.check": pgettext_lazy("audit action", "Controller dump check requested"),
    "backup_dump.drill": pgettext_lazy("audit action", "Restore drill run"),
    "backup.export.request": pgettext_lazy("audit action", "Maildir export requested"),
    "backup.export.download": pgettext_lazy("audit action", "Maildir export downloaded"),
    "backup.purge.start": pgettext_lazy("audit action", "Permanent purge started"),
    "backup.purge.done": pgettext_lazy("audit action", "Permanently purged"),
    "backup_exclusion.update": pgettext_lazy("audit action", "Backup exclusion changed"),
    "mail_store.update": pgettext_lazy("audit action", "Mail store settings changed"),
    "mail_store.tier_now": pgettext_lazy("audit action", "Storage tiering pass requested"),
    "snapshot.restore": pgettext_lazy("audit action", "Restore from snapshot requested"),
    "snapshot.delete": pgettext_lazy("audit action", "Snapshot deletion requested"),
    "backup_clone.swept": pgettext_lazy("audit action", "Leftover snapshot clone destroyed"),
    "offnode_setting.update": pgettext_lazy("audit action", "Off-node copy setting changed"),
    "offnode_copy.request": pgettext_lazy("audit action", "Off-node copy requested"),
    "offnode_copy.verify_request": pgettext_lazy(
        "audit action", "Off-node copy verification requested"
    ),
    "offnode_copy.verified": pgettext_lazy("audit action", "Off-node copy verified"),
    "offnode_archive.restore": pgettext_lazy(
        "audit action", "Restore from a Maildir archive requested"
    ),
    "node.rebuild": pgettext_lazy("audit action", "Restore onto a new node requested"),
    "domain.rebuilt": pgettext_lazy("audit action", "Domain restored onto a new node"),
    "replica.assigned": pgettext_lazy("audit action", "Domain replica assigned"),
    "replication_policy.update": pgettext_lazy("audit action", "Replication policy changed"),
    "replication_policy.delete": pgettext_lazy(
        "audit action", "Replication policy removed (inherited again)"
    ),
    "replication.sync_request": pgettext_lazy("audit action", "Replica sync requested"),
    "replication.failover_request": pgettext_lazy("audit action", "Failover requested"),
    "replication.failback_request": pgettext_lazy("audit action", "Failback requested"),
    "replication.auto_failover": pgettext_lazy("audit action", "Automatic failover started"),
    "domain.failover": pgettext_lazy("audit action", "Domain failed over"),
    "clouddb.member_added": pgettext_lazy("audit action", "Cloud DB node joined its zone"),
    "clouddb.seeded": pgettext_lazy("audit action", "Cloud DB replica copied"),
    "clouddb.dbhost_set": pgettext_lazy("audit action", "Nextcloud database host set"),
    "clouddb.failover_request": pgettext_lazy("audit action", "Cloud DB failover requested"),
    "clouddb.failover": pgettext_lazy("audit action", "Cloud DB failed over"),
    "clouddb.auto_failover": pgettext_lazy("audit action", "Automatic cloud DB failover started"),
    "domain.failback": pgettext_lazy("audit action", "Domain switched back"),
    "job.given_up": pgettext_lazy("audit action", "Job given up"),
    "node.key_rotated": pgettext_lazy("audit action", "Controller key rotated"),
    "node.host_key_mismatch": pgettext_lazy("audit action", "Node host key changed"),
    "node.host_key_accept": pgettext_lazy("audit action", "New host key accepted"),
    "lb_certificate.issuer": pgettext_lazy("audit action", "Certificate issuer chosen"),
    "rule_channel_key.set": pgettext_lazy("audit action", "Update channel signing key set"),
    "rule_channel_key.delete": pgettext_lazy("audit action", "Update channel signing key removed"),
    "office_console.reveal": pgettext_lazy("audit action", "Office console password revealed"),
    "node.status.active": pgettext_lazy("audit action", "Node is active"),
    "node.status.degraded": pgettext_lazy("audit action", "Node is degraded"),
    "node.status.offline": pgettext_lazy("audit action", "Node is offline"),
    # spam hold
    "spamhold.ingested": pgettext_lazy("audit action", "Held mail collected"),
    "spamhold.read_content": pgettext_lazy("audit action", "Held message read"),
    "spamhold.release": pgettext_lazy("audit action", "Held mail released"),
    "spamhold.release_allow": pgettext_lazy("audit action", "Held mail released, sender allowed"),
    "spamhold.delete": pgettext_lazy("audit action", "Held mail deleted"),
    "spamhold.delete_block": pgettext_lazy("audit action", "Held mail deleted, sender blocked"),
    "spamhold.expire": pgettext_lazy("audit action", "Held mail expired"),
    "spamhold.gone": pgettext_lazy("audit action", "Held mail already gone from the node"),
    "spamhold.release_failed": pgettext_lazy("audit action", "Releasing held mail failed"),
    "spamhold.delete_failed": pgettext_lazy("audit action", "Deleting held mail failed"),
    "spamhold.request_failed": pgettext_lazy("audit action", "Held-mail request given up"),
    "spamhold.bulk": pgettext_lazy("audit action", "Bulk action on held mail"),
    "spamhold.retention.set": pgettext_lazy("audit action", "Hold retention set"),
    "spamhold.retention.reset": pgettext_lazy("audit action", "Hold retention reset"),
    # product licence
    "licence.install": pgettext_lazy("audit action", "Licence installed"),
    # usage reports
    "usage.monthly_recipient.add": pgettext_lazy(
        "audit action", "Monthly usage report recipient added"
    ),
    "usage.monthly_recipient.remove": pgettext_lazy(
        "audit action", "Monthly usage report recipient removed"
    ),
    # cloud files
    "files.policy.update": pgettext_lazy("audit action", "Cloud files policy changed"),
    "files.links.revoke_requested": pgettext_lazy(
        "audit action", "Revocation of external file links requested"
    ),
    "files.links.revoked": pgettext_lazy("audit action", "External file links revoked"),
}


def label(action: str) -> str:
    """The label of ``action`` in the active language, or the code itself."""
    found = ACTION_LABELS.get(action)
    return str(found) if found is not None else action
