"""Content filtering on SMTP nodes: Postfix wiring for spam, virus, attachment and sender
checks and greylisting, and the policy file the node-side filter reads.

The Postfix service merges what these functions return into its own rendering, so this
concern lives in one module without editing the base configuration.

How mail flows (SMTP-role nodes only):

* every ``smtpd`` (25, 587, 465) talks to one milter, ``filter/ums_filter.py milter``,
  which Postfix itself starts per connection through ``spawn(8)``: no extra daemon to
  supervise, and the filter is as available as Postfix is. It asks spamd and clamd
  (loopback TCP) and decides per message, during the SMTP session:

  - virus, blocked attachment, blocked sender: the message goes to Postfix's **hold
    queue** (milter quarantine) with one ``X-UMS-Hold`` header, for administrators to
    review and release (the product sheet's "held spam / viruses");
  - spam: tag (X-Spam headers, subject tag), hold, or refuse with 550 at end of DATA
    when the recipient domain's policy sets a reject score. Refusing in the session
    means the sending server reports it: no bounce we generate, no backscatter;
  - submission and SMTPS (authenticated users) skip spam scoring and the sender lists
    (our own users, already bound to their addresses by ``reject_sender_login_mismatch``;
    holding their outbound mail as spam would only delay legitimate replies) but get the
    virus and attachment checks, so a compromised account cannot spread malware;
  - anything failing (spamd/clamd down, the filter crashing or timing out) answers 4xx
    (``milter_default_action = tempfail``): the client keeps the message and retries.

* ``header_checks`` drops ``X-UMS-Hold`` headers arriving from outside (the milter deletes
  them as well), so only the filter's own header can mark a hold;
* greylisting (off by default) is a ``check_policy_service`` on port 25 only, served by
  the same script in ``greylist`` mode; it answers DUNNO for domains that do not use it.
  A small built-in greylister instead of postgrey: postgrey is a separate daemon to keep
  running (and only in EPEL on RockyLinux), this one is started by Postfix on demand.

``policy.json`` holds everything the filter needs (per-domain policy, spamd/clamd
addresses, thresholds), so mail keeps flowing while the controller is down.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from deploy.services.base import DesiredState, ManagedFile
from deploy.services.clamav import CLAMD_TCP, antivirus_domains
from deploy.services.spamassassin import SPAMD_ADDRESS, SPAMD_PORT, node_defaults, thresholds_for
from mail import choices

from .. import mail_auth
from . import safe

ROOT = "/etc/postfix"
FILTER_DIR = f"{ROOT}/ums-filter"
SCRIPT = f"{FILTER_DIR}/ums_filter.py"
POLICY = f"{FILTER_DIR}/policy.json"
HEADER_CHECKS = f"{ROOT}/ums_header_checks"
#: Greylisting state; created by the SpamAssassin service's activate (owner ``nobody``).
GREYLIST_DIR = "/var/lib/ums-filter"
GREYLIST_DB = f"{GREYLIST_DIR}/greylist.sqlite"
#: spawn(8) refuses root and the mail system owner; the filter needs no privileges.
FILTER_USER = "nobody"
MILTER_SERVICE = "ums-milter"
GREYLIST_SERVICE = "ums-greylist"
PYTHON = {"debian": "/usr/bin/python3", "rhel": "/usr/libexec/platform-python"}

_EXTENSION = re.compile(r"^[a-z0-9]{1,16}$")
_MIME_PART = r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"
_MIME = re.compile(rf"^{_MIME_PART}/{_MIME_PART}$")
# RFC 5322 atext, lower case: no quote, backslash, space, ';' or control characters.
_SENDER_LOCAL = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")
_SUBJECT_TAG = re.compile(r"^[\x20-\x7e]{0,40}$")


def _value(policy: dict, key: str) -> Any:
    value = policy.get(key, choices.FILTER_DEFAULTS[key])
    if isinstance(value, dict):  # {"value": ..., "source": ...}
        value = value.get("value")
    return choices.FILTER_DEFAULTS[key] if value is None else value


def _on(value: object) -> bool:
    return value is True or str(value).lower() in ("true", "1", "yes", "on")


def extension(value: object) -> str:
    """A blocked extension as the filter compares it: lower case, no dot."""
    text = str(value).strip().lower().lstrip(".") if isinstance(value, str) else ""
    if not _EXTENSION.match(text):
        raise safe.UnsafeName(f"refusing blocked extension {value!r}")
    return text


def mime_type(value: object) -> str:
    text = value.strip().lower() if isinstance(value, str) else ""
    if not _MIME.match(text):
        raise safe.UnsafeName(f"refusing blocked MIME type {value!r}")
    return text


def sender_entry(value: object) -> str:
    """``user@example.com``, ``@example.com`` or ``example.com`` (and its subdomains)."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if text.startswith("@"):
        return "@" + safe.domain(text[1:])
    local, sep, dom = text.rpartition("@")
    if not sep:
        return safe.domain(text)
    if not _SENDER_LOCAL.match(local) or ".." in local:
        raise safe.UnsafeName(f"refusing sender list entry {value!r}")
    return f"{local}@{safe.domain(dom)}"


def dmarc_failure(value: object) -> str:
    if value not in choices.DMARC_FAILURE_CODES:
        raise safe.UnsafeName(f"refusing DMARC failure action {value!r}")
    return str(value)


def filter_policy(
    policy: dict, state: DesiredState, *, antivirus: bool | None = None
) -> dict[str, Any]:
    """The filter's view of one effective policy; every value validated."""
    thresholds = thresholds_for(policy, node_defaults(state.settings))
    return {
        "thresholds": {"tag": thresholds.tag, "hold": thresholds.hold, "reject": thresholds.reject},
        "antivirus": _on(_value(policy, "antivirus")) if antivirus is None else antivirus,
        "greylisting": _on(_value(policy, "greylisting")),
        "blocked_extensions": sorted({extension(e) for e in _value(policy, "blocked_extensions")}),
        "blocked_mime_types": sorted({mime_type(m) for m in _value(policy, "blocked_mime_types")}),
        "sender_allow": sorted({sender_entry(s) for s in _value(policy, "sender_allow")}),
        "sender_block": sorted({sender_entry(s) for s in _value(policy, "sender_block")}),
        "dmarc_failure": dmarc_failure(_value(policy, "dmarc_failure")),
    }


def filter_config(state: DesiredState) -> dict[str, Any]:
    """``policy.json``: policies deduplicated, domains (and alias domains) -> policy key."""
    settings = state.settings
    subject = str(settings.get("spam_subject_tag", "[SPAM]"))
    if not _SUBJECT_TAG.match(subject):
        raise safe.UnsafeName(f"refusing spam subject tag {subject!r}")
    dmarc_tag = str(settings.get("dmarc_subject_tag", "[DMARC]"))
    if not _SUBJECT_TAG.match(dmarc_tag):
        raise safe.UnsafeName(f"refusing DMARC subject tag {dmarc_tag!r}")
    scanned = set(antivirus_domains(state))
    policies: dict[str, dict] = {"default": filter_policy({}, state)}
    keys: dict[str, str] = {}
    domains: dict[str, str] = {}
    for domain in sorted(state.domains, key=lambda d: d.name):
        if not domain.enabled:
            continue
        entry = filter_policy(
            domain.policy or {}, state, antivirus=safe.domain(domain.name) in scanned
        )
        fingerprint = json.dumps(entry, sort_keys=True)
        key = keys.get(fingerprint)
        if key is None:
            key = keys[fingerprint] = f"p{len(keys) + 1}"
            policies[key] = entry
        for name in (domain.name, *domain.aliases):
            domains[safe.domain(name)] = key
    max_mb = int(settings.get("clamav_max_file_size_mb") or 25)
    return {
        "spamd": {
            "host": SPAMD_ADDRESS,
            "port": SPAMD_PORT,
            "timeout": int(settings.get("spam_timeout") or 120),
            "max_bytes": int(settings.get("spam_max_size") or 512000),
        },
        "clamd": {
            "host": CLAMD_TCP[0],
            "port": CLAMD_TCP[1],
            "timeout": int(settings.get("clamav_timeout") or 120),
            "max_bytes": max_mb * 1024 * 1024,
        },
        "subject_tag": subject,
        "dmarc_subject_tag": dmarc_tag,
        # OpenDMARC's results carry the node's host name (deploy/services/opendmarc).
        "authserv_id": safe.domain(state.node.hostname.lower()),
        # The filter's own DMARC lookup check uses the checks' resolver too.
        "resolvers": mail_auth.resolvers(state),
        "greylist": {
            "db": GREYLIST_DB,
            "delay": int(settings.get("greylist_delay", 300)),
            "retention": int(settings.get("greylist_retention_days", 35)) * 86400,
        },
        "policies": policies,
        "domains": domains,
    }


def _filters(state: DesiredState) -> bool:
    # ``content_filter: false`` (UMS_CONVERGE) runs an SMTP node as a plain relay, for
    # operators who filter elsewhere; the mail routing tests use it too, so they need no
    # spamd/clamd (the filtering tests run the filter with both).
    return "smtp" in state.node.roles and bool(state.settings.get("content_filter", True))


def _greylists(state: DesiredState) -> bool:
    return any(p["greylisting"] for p in filter_config(state)["policies"].values())


def params(state: DesiredState) -> list[tuple[str, str]]:
    """main.cf parameters to add or override."""
    # Queue ids are never reused, so a held message's id names it for good (spam-hold).
    result = [("enable_long_queue_ids", "yes")]
    if not _filters(state):
        return result
    result += [
        ("smtpd_milters", f"unix:private/{MILTER_SERVICE}"),
        # Mail the node itself submits (bounces, postmaster notices) is not filtered.
        ("non_smtpd_milters", ""),
        ("milter_protocol", "6"),
        # A filter that crashes or hangs defers the message: never accepted unscanned.
        ("milter_default_action", "tempfail"),
        ("milter_connect_timeout", "30s"),
        ("milter_command_timeout", "60s"),
        ("milter_content_timeout", "300s"),
        # One filter process serves a whole SMTP session (spawn's default is 1000 s).
        (f"{MILTER_SERVICE}_time_limit", "3600s"),
        ("header_checks", f"regexp:{HEADER_CHECKS}"),
    ]
    if _greylists(state):
        # Port 25 only: submission and SMTPS empty smtpd_recipient_restrictions.
        result += [
            (
                "smtpd_recipient_restrictions",
                f"check_policy_service unix:private/{GREYLIST_SERVICE}",
            ),
            ("smtpd_policy_service_default_action", "DUNNO"),
        ]
    return result


def master_entries(state: DesiredState) -> str:
    """master.cf text appended to the base services."""
    if not _filters(state):
        return ""
    python = PYTHON.get(state.node.os_family, PYTHON["debian"])
    lines = [
        "# UMS content filter (deploy/services/postfix/filtering.py), started per connection.",
        f"{MILTER_SERVICE} unix  -       n       n       -       -       spawn",
        f"  user={FILTER_USER} argv={python} {SCRIPT} milter",
    ]
    if _greylists(state):
        lines += [
            f"{GREYLIST_SERVICE} unix -      n       n       -       -       spawn",
            f"  user={FILTER_USER} argv={python} {SCRIPT} greylist",
        ]
    return "\n".join(lines) + "\n"


def script() -> bytes:
    """The node-side filter, shipped with this package."""
    return resources.files(__package__).joinpath("filter/ums_filter.py").read_bytes()


def files(state: DesiredState) -> list[ManagedFile]:
    """Extra files this concern installs on the node."""
    if not _filters(state):
        return []
    config = json.dumps(filter_config(state), indent=1, sort_keys=True) + "\n"
    return [
        ManagedFile(SCRIPT, script(), mode=0o755),
        ManagedFile(POLICY, config.encode()),
        ManagedFile(
            HEADER_CHECKS,
            b"# Managed by UMS: only the content filter may mark a message for hold.\n"
            b"/^X-UMS-Hold:/i IGNORE\n",
        ),
    ]
