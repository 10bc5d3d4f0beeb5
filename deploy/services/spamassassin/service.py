"""SpamAssassin on SMTP nodes: scoring configuration and thresholds for the Postfix glue.

SpamAssassin only *scores*; what happens at each score is per domain (the effective
filtering policy: ``spam_tag_score`` < ``spam_hold_score`` < ``spam_reject_score``), and
one spamd serves every domain on the node. So:

* ``local.cf`` (rendered here) makes spamd add ``X-Spam-Score`` to every message without
  rewriting the body (``report_safe 0``), with ``required_score`` at the node-wide
  default tag score (what ``X-Spam-Flag``/the subject tag follow);
* ``ums_thresholds.json`` (rendered next to it; SpamAssassin reads only ``*.cf`` and
  ``*.pre``, so it is inert to spamd) holds the per-domain thresholds, so the filter on
  the node decides tag / hold / reject without the controller;
* :func:`classify` is that decision, and :func:`postfix_glue` everything the Postfix
  side (owned by the Postfix service) needs: spamd address, spamc argv, thresholds.

The Postfix content filter (deploy/services/postfix/filtering.py) asks spamd with the
``SYMBOLS`` command (score and rule names) and writes the X-Spam headers itself, per
recipient domain. No reject score (``None``, the product default) means spam is held for
administrators to review, never refused, unless a customer or domain policy sets one.

Settings (all optional): ``spam_subject_tag`` (default ``"[SPAM]"``),
``spam_network_checks`` (default true; false skips DNS blocklists on offline nodes),
``spam_max_size`` (bytes spamc sends, default 512000), and the node-wide defaults
``spam_tag_score``/``spam_hold_score``/``spam_reject_score`` (else the product defaults).
"""

from __future__ import annotations

import ipaddress
import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from deploy.connector.base import Connector
from deploy.services.base import (
    CheckFailed,
    DesiredState,
    ManagedFile,
    Preparation,
    Service,
)
from mail import choices as mail_choices

__all__ = [
    "DEFAULT_THRESHOLDS",
    "SPAMD_ADDRESS",
    "SPAMD_PORT",
    "SpamAssassinService",
    "SpamThresholds",
    "classify",
    "node_defaults",
    "postfix_glue",
    "thresholds_by_domain",
    "thresholds_for",
]

SPAMD_ADDRESS = "127.0.0.1"
SPAMD_PORT = 783
#: spamd's pid file when no service manager runs it.
SPAMD_PIDFILE = "/run/spamd/spamd.pid"
SPAMD_LOG = "/var/log/spamd.log"
#: Greylisting state of the Postfix content filter (see activate).
GREYLIST_DIR = "/var/lib/ums-filter"
THRESHOLDS_FILE = "ums_thresholds.json"


@dataclass(frozen=True)
class SpamThresholds:
    """Scores at or above which a message is tagged, held, rejected."""

    tag: float
    hold: float
    #: None: never refuse; everything from ``hold`` up is held for review.
    reject: float | None


def _product_default(value: object) -> float | None:
    return None if value is None else float(str(value))


#: The product defaults, from mail.choices (the one place they are defined). A reject
#: score applies only where a customer or domain policy sets one: the product keeps spam
#: for administrators to review (and release), it does not silently refuse it.
DEFAULT_THRESHOLDS = SpamThresholds(
    float(str(mail_choices.DEFAULT_SPAM_TAG_SCORE)),
    float(str(mail_choices.DEFAULT_SPAM_HOLD_SCORE)),
    _product_default(mail_choices.DEFAULT_SPAM_REJECT_SCORE),
)

_SUBJECT_RE = re.compile(r"^[\x20-\x7e]{0,40}$")


def _score(value: object, fallback: float | None) -> float | None:
    if value is None or value == "":
        return fallback
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"invalid spam score {value!r}") from exc
    if not number.is_finite():
        raise ValueError(f"invalid spam score {value!r}")
    return float(number)


def thresholds_for(
    policy: Mapping[str, Any], default: SpamThresholds = DEFAULT_THRESHOLDS
) -> SpamThresholds:
    """Thresholds from an effective filtering policy (``DomainData.policy``).

    Accepts plain values or the ``{"value": ..., "source": ...}`` form
    ``mail.policy.effective_filtering`` returns.
    """

    def get(key: str, fallback: float | None) -> float | None:
        value = policy.get(key)
        if isinstance(value, Mapping):
            value = value.get("value")
        return _score(value, fallback)

    tag = get("spam_tag_score", default.tag)
    hold = get("spam_hold_score", default.hold)
    if tag is None or hold is None:  # only if a default itself is missing
        raise ValueError("spam tag and hold scores are required")
    return SpamThresholds(tag, hold, get("spam_reject_score", default.reject))


def node_defaults(settings: Mapping[str, Any]) -> SpamThresholds:
    """Node-wide thresholds: settings, else the product defaults."""
    return thresholds_for(settings, DEFAULT_THRESHOLDS)


def thresholds_by_domain(state: DesiredState) -> dict[str, SpamThresholds]:
    """Per domain (and each of its alias domains) the thresholds its policy sets."""
    default = node_defaults(state.settings)
    result: dict[str, SpamThresholds] = {}
    for domain in sorted(state.domains, key=lambda d: d.name):
        thresholds = thresholds_for(domain.policy or {}, default)
        for name in (domain.name, *domain.aliases):
            result[name] = thresholds
    return result


def classify(score: float, thresholds: SpamThresholds) -> str:
    """``"reject"``, ``"hold"``, ``"tag"`` or ``"pass"`` for a SpamAssassin score.

    The highest action reached wins, so a policy with hold >= reject simply rejects; no
    reject score (``None``, the product default) never rejects. The node-side filter
    (deploy/services/postfix/filter/ums_filter.py) applies the same rule.
    """
    if thresholds.reject is not None and score >= thresholds.reject:
        return "reject"
    if score >= thresholds.hold:
        return "hold"
    if score >= thresholds.tag:
        return "tag"
    return "pass"


def postfix_glue(state: DesiredState) -> dict[str, Any]:
    """What the Postfix service needs to wire mail through spamd.

    ``spamc_argv`` is the filter command (``-x``: fail rather than pass mail unscanned
    when spamd is down, so Postfix defers it), ``score_header`` the header carrying the
    score, ``thresholds_file`` the per-domain thresholds on the node.
    """
    max_size = int(state.settings.get("spam_max_size") or 512000)
    return {
        "spamd_address": SPAMD_ADDRESS,
        "spamd_port": SPAMD_PORT,
        "spamc_argv": [
            "/usr/bin/spamc",
            "-x",
            "-d",
            SPAMD_ADDRESS,
            "-p",
            str(SPAMD_PORT),
            "-s",
            str(max_size),
        ],
        "score_header": "X-Spam-Score",
        "thresholds_file": f"{SpamAssassinService.config_root}/{THRESHOLDS_FILE}",
        "default": node_defaults(state.settings),
        "domains": thresholds_by_domain(state),
    }


class SpamAssassinService(Service):
    """spamd's site configuration. ``extra_rules`` (raw ``local.cf`` text) is test-only."""

    name = "spamassassin"
    check_cost = 2  # spamassassin --lint loads every rule
    roles = frozenset({"smtp"})
    # Debian 12 ships spamd separately from the spamassassin library and tools.
    packages = {"debian": ("spamassassin", "spamd", "spamc"), "rhel": ("spamassassin",)}
    config_root = "/etc/spamassassin"

    def __init__(
        self, *, config_root: str | None = None, extra_rules: str = "", max_children: int = 5
    ) -> None:
        if config_root is not None:
            self.config_root = config_root.rstrip("/")
        self.extra_rules = extra_rules
        self.max_children = max_children

    def render(self, state: DesiredState) -> list[ManagedFile]:
        """``local.cf`` and ``ums_thresholds.json`` for ``state.node``."""
        settings = state.settings
        default = node_defaults(settings)
        subject = str(settings.get("spam_subject_tag", "[SPAM]"))
        if not _SUBJECT_RE.match(subject):
            raise ValueError(f"invalid spam subject tag {subject!r}")
        trusted = ["127.0.0.0/8", "::1"]
        # Our own SMTP nodes relay to each other: their Received headers are trusted.
        for _host, address in sorted(state.nodes_by_role.get("smtp") or []):
            try:
                trusted.append(str(ipaddress.ip_address(address)))
            except ValueError:
                continue  # a hostname: SpamAssassin wants addresses here
        lines = [
            "# Managed by UMS: local changes are overwritten.",
            f"required_score {default.tag:g}",
            # Headers only, body untouched: the filter reads X-Spam-Score and held mail
            # is released exactly as it arrived.
            "report_safe 0",
            f"rewrite_header Subject {subject}" if subject else "",
            "add_header all Score _SCORE_",
            f"trusted_networks {' '.join(dict.fromkeys(trusted))}",
            # spamd sees no Received header of ours (the filter is a milter), so every
            # header counts as internal and the SPF plugin would reuse the oldest spf=
            # result: one the sender wrote. The newest is OpenDMARC's, on this node.
            "use_newest_received_spf_header 1",
        ]
        if settings.get("spam_network_checks", True) in (False, "false", "0", 0):
            lines.append("skip_rbl_checks 1")
        if self.extra_rules:
            lines.append(self.extra_rules)
        local_cf = "\n".join(line for line in lines if line) + "\n"
        thresholds = {
            "default": asdict(default),
            "domains": {name: asdict(t) for name, t in thresholds_by_domain(state).items()},
        }
        return [
            ManagedFile(f"{self.config_root}/local.cf", local_cf.encode()),
            ManagedFile(
                f"{self.config_root}/{THRESHOLDS_FILE}",
                (json.dumps(thresholds, indent=1, sort_keys=True) + "\n").encode(),
            ),
        ]

    def validate(self, conn: Connector, staged_root: str) -> None:
        """``spamassassin --lint`` with the staged directory as the site configuration."""
        result = conn.run(["spamassassin", "--lint", "--siteconfigpath", staged_root], timeout=120)
        if not result.ok:
            raise CheckFailed(self.name, (result.stderr + result.stdout).strip())

    unit_names = ("spamd",)

    def pidfiles(self, conn: Connector) -> list[str]:
        return [SPAMD_PIDFILE]

    def activate(self, conn: Connector, changed: list[ManagedFile]) -> None:
        """Start spamd, or make it re-read its configuration (SIGHUP) if it runs."""
        config_changed = any(f.path.endswith((".cf", ".pre")) for f in changed)
        # The unit is "spamd" on Debian and "spamassassin" on Rocky.
        for unit in ("spamd", "spamassassin"):
            if conn.run(["systemctl", "cat", unit]).ok:
                conn.run(["systemctl", "enable", unit])
                verb = "reload-or-restart" if config_changed else "start"
                conn.run(["systemctl", verb, unit], timeout=300).check()
                return
        # No systemd (containers, the test machines): our own pid file.
        pid = (conn.get_file(SPAMD_PIDFILE) or b"").strip().decode(errors="replace")
        if pid.isdigit() and conn.run(["kill", "-0", pid]).ok:
            if config_changed:
                conn.run(["kill", "-HUP", pid]).check()
            return
        conn.run(["mkdir", "-p", posixpath.dirname(SPAMD_PIDFILE)]).check()
        result = conn.run(self.spamd_argv(), timeout=300)
        if not result.ok:
            raise CheckFailed(self.name, f"spamd did not start:\n{result.stdout}{result.stderr}")

    def prepare(self, conn: Connector, state: DesiredState) -> Preparation | None:
        """The greylisting state directory of the Postfix content filter.

        The filter (deploy/services/postfix/filtering.py) runs as ``nobody`` and needs a
        directory it may write; Postfix's filtering hook has no preparation step, and
        this service runs on exactly the nodes that filter.
        """
        owner = conn.run(["stat", "-c", "%U", GREYLIST_DIR])
        if owner.ok and owner.stdout.strip() == "nobody":
            return None
        return Preparation(
            commands=[
                ["mkdir", "-p", "-m", "700", GREYLIST_DIR],
                ["chown", "nobody", GREYLIST_DIR],
            ]
        )

    def spamd_argv(self) -> list[str]:
        """spamd as a daemon on loopback, site configuration only (no user rules)."""
        return [
            "spamd",
            "--daemonize",
            f"--pidfile={SPAMD_PIDFILE}",
            f"--listen={SPAMD_ADDRESS}:{SPAMD_PORT}",
            "--nouser-config",
            f"--max-children={self.max_children}",
            "--min-children=1",
            f"--syslog={SPAMD_LOG}",
        ]
