"""Fixed vocabularies of the mail app: protocols and their defaults, access values, kinds."""

from __future__ import annotations

from decimal import Decimal

from django.utils.translation import gettext_lazy as _

# Protocol access, per port as the product sheet lists them: (code, label, port, default).
PROTOCOLS: list[tuple[str, object, str, bool]] = [
    ("smtp", _("SMTP (port 25)"), "25", True),
    ("smtps", _("SMTPS (port 465)"), "465", True),
    ("submission", _("Submission (port 587)"), "587", True),
    ("imaps", _("IMAPS (port 993)"), "993", True),
    ("imap", _("IMAP, unencrypted (port 143)"), "143", False),
    ("pop3s", _("POP3S (port 995)"), "995", True),
    ("pop3", _("POP3, unencrypted (port 110)"), "110", False),
    ("activesync", _("ActiveSync (HTTPS, port 443)"), "443", True),
    ("webmail", _("Webmail"), "443", True),
    ("dav", _("CalDAV / CardDAV"), "443", True),
    # Cloud files (Nextcloud): off unless a level of the tree turns it on (it uses storage).
    ("files", _("Cloud files"), "443", False),
    # Not a port: whether the mailbox's calendar is readable by the other mailboxes of its
    # customer (Radicale rights on cloud-files nodes); off unless a level allows it.
    ("dav_sharing", _("Calendar shared within the customer"), "443", False),
    # Team chat (chat app): the mailbox has a user in its customer's Zulip organisation.
    ("chat", _("Team chat"), "443", True),
]
#: Protocols no server of this installation enforces yet, with what the portal says.
#: ActiveSync: neither Debian nor PyPI ships an ActiveSync server (Z-Push is not packaged
#: for Debian 12), so the flag is kept for when one is added (see README, "ActiveSync").
PROTOCOL_NOTES = {
    "activesync": _(
        "No ActiveSync server in this installation: the setting is kept, but "
        "nothing serves ActiveSync yet."
    ),
}
PROTOCOL_CODES: tuple[str, ...] = tuple(code for code, *_rest in PROTOCOLS)
PROTOCOL_LABELS = {code: label for code, label, _port, _default in PROTOCOLS}
PROTOCOL_DEFAULTS = {code: default for code, _label, _port, default in PROTOCOLS}

INHERIT = "inherit"
ALLOW = "allow"
DENY = "deny"
ACCESS_CHOICES = [(INHERIT, _("Inherit")), (ALLOW, _("Allow")), (DENY, _("Deny"))]
ACCESS_VALUES = (INHERIT, ALLOW, DENY)

# Where an effective value comes from.
SOURCE_DEFAULT = "default"
SOURCE_CUSTOMER = "customer"
SOURCE_DOMAIN = "domain"
SOURCE_MAILBOX = "mailbox"

ALIAS = "alias"
GROUP = "group"
ALIAS_KINDS = [(ALIAS, _("Alias")), (GROUP, _("Distribution group"))]

DKIM_ACTIVE = "active"
DKIM_RETIRED = "retired"
DKIM_STATES = [(DKIM_ACTIVE, _("Active")), (DKIM_RETIRED, _("Retired"))]
# What the last DNS check found at the key's TXT record (empty: never checked).
DNS_UNCHECKED = ""
DNS_MATCH = "match"
DNS_MISMATCH = "mismatch"
DNS_MISSING = "missing"
DNS_ERROR = "error"
DKIM_DNS_STATES = [
    (DNS_UNCHECKED, _("Not checked")),
    (DNS_MATCH, _("Published")),
    (DNS_MISMATCH, _("Different key published")),
    (DNS_MISSING, _("No record")),
    (DNS_ERROR, _("Lookup failed")),
]
DKIM_KEY_SIZES = [(2048, "RSA 2048"), (3072, "RSA 3072"), (4096, "RSA 4096")]
DKIM_DEFAULT_BITS = 2048

SIEVE_RULES = "rules"
SIEVE_RAW = "raw"
SIEVE_MODES = [(SIEVE_RULES, _("Rule editor")), (SIEVE_RAW, _("Raw Sieve"))]

# Filtering policy defaults (the values at the top of the tree).
DEFAULT_BLOCKED_EXTENSIONS = [
    "ade", "adp", "app", "bat", "chm", "cmd", "com", "cpl", "dll", "exe", "hta", "inf",
    "ins", "isp", "jar", "js", "jse", "lnk", "msc", "msi", "msp", "mst", "pif", "ps1",
    "reg", "scf", "scr", "sct", "shb", "shs", "vb", "vbe", "vbs", "wsc", "wsf", "wsh",
]  # fmt: skip
DEFAULT_BLOCKED_MIME_TYPES = [
    "application/hta",
    "application/java-archive",
    "application/x-dosexec",
    "application/x-ms-shortcut",
    "application/x-msdos-program",
    "application/x-msdownload",
    "application/x-msi",
    "application/vnd.microsoft.portable-executable",
]
DEFAULT_SPAM_TAG_SCORE = Decimal("5.0")
DEFAULT_SPAM_HOLD_SCORE = Decimal("8.0")
# No reject score by default: spam at or above the hold score is held for administrators
# to review and release (the product sheet's spam hold). Rejecting during the SMTP session
# is opt-in per customer or domain.
DEFAULT_SPAM_REJECT_SCORE: Decimal | None = None
DEFAULT_ANTIVIRUS = True
DEFAULT_GREYLISTING = False

# What the SMTP node does with inbound mail that fails DMARC (OpenDMARC's verdict; the
# content filter acts on it). "sender" follows the From domain's published policy:
# p=reject refused, p=quarantine held, p=none tagged. Results other than "fail" (pass,
# none, and temperror when DNS cannot answer) always deliver.
DMARC_NONE, DMARC_TAG, DMARC_HOLD, DMARC_REJECT, DMARC_SENDER = (
    "none", "tag", "hold", "reject", "sender",
)  # fmt: skip
DMARC_FAILURE_CHOICES = [
    (DMARC_NONE, _("Deliver (results in the headers only)")),
    (DMARC_TAG, _("Tag (header and subject prefix)")),
    (DMARC_HOLD, _("Hold in spam hold")),
    (DMARC_REJECT, _("Refuse during the SMTP session")),
    (DMARC_SENDER, _("As the sender's domain asks (reject refused, quarantine held)")),
]
DMARC_FAILURE_CODES = tuple(code for code, _label in DMARC_FAILURE_CHOICES)
# Tagging loses nothing and delays nothing: a forwarded or list message that breaks
# DMARC still arrives, marked.
DEFAULT_DMARC_FAILURE = DMARC_TAG

FILTER_FIELDS = (
    "blocked_extensions",
    "blocked_mime_types",
    "spam_tag_score",
    "spam_hold_score",
    "spam_reject_score",
    "antivirus",
    "greylisting",
    "sender_allow",
    "sender_block",
    "dmarc_failure",
)
FILTER_DEFAULTS: dict[str, object] = {
    "blocked_extensions": DEFAULT_BLOCKED_EXTENSIONS,
    "blocked_mime_types": DEFAULT_BLOCKED_MIME_TYPES,
    "spam_tag_score": DEFAULT_SPAM_TAG_SCORE,
    "spam_hold_score": DEFAULT_SPAM_HOLD_SCORE,
    "spam_reject_score": DEFAULT_SPAM_REJECT_SCORE,
    "antivirus": DEFAULT_ANTIVIRUS,
    "greylisting": DEFAULT_GREYLISTING,
    "sender_allow": [],
    "sender_block": [],
    "dmarc_failure": DEFAULT_DMARC_FAILURE,
}
FILTER_LABELS = {
    "blocked_extensions": _("Blocked attachment extensions"),
    "blocked_mime_types": _("Blocked attachment types (MIME)"),
    "spam_tag_score": _("Spam tag score"),
    "spam_hold_score": _("Spam hold score"),
    "spam_reject_score": _("Spam reject score"),
    "antivirus": _("Anti-virus"),
    "greylisting": _("Greylisting"),
    "sender_allow": _("Allowed senders"),
    "sender_block": _("Blocked senders"),
    "dmarc_failure": _("On DMARC failure"),
}

DEFAULT_QUOTA_MB = 1024
MAX_QUOTA_MB = 1_048_576  # 1 TB per mailbox
DEFAULT_RETENTION_DAYS = 30
MAX_RETENTION_DAYS = 3650
MAX_FORWARDS = 20
MAX_ALIAS_TARGETS = 1000
MAX_LIST_ENTRIES = 1000
