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

Settings (all optional): ``spam_subject_tag`` (default ``"[SPAM]"``),
``spam_network_checks`` (default true; false skips DNS blocklists on offline nodes),
``spam_max_size`` (bytes spamc sends, default 512000), and the node-wide defaults
``spam_tag_score``/``spam_hold_score``/``spam_reject_score`` (else the product defaults).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from deploy.connector.base import Connector
from deploy.services.base import CheckFailed, DesiredState, ManagedFile, Service

__all__ = [
    "DEFAULT_THRESHOLDS",
    "SPAMD_ADDRESS",
    "SPAMD_PORT",
    "SpamAssassinService",
    "SpamThresholds",
    "classify",
    "postfix_glue",
    "thresholds_by_domain",
    "thresholds_for",
]

SPAMD_ADDRESS = "127.0.0.1"
SPAMD_PORT = 783
THRESHOLDS_FILE = "ums_thresholds.json"


@dataclass(frozen=True)
class SpamThresholds:
    """Scores at or above which a message is tagged, held, rejected."""

    tag: float
    hold: float
    reject: float


#: The product defaults (mail.choices.DEFAULT_SPAM_*_SCORE; a test keeps them equal).
DEFAULT_THRESHOLDS = SpamThresholds(5.0, 8.0, 15.0)

_SUBJECT_RE = re.compile(r"^[\x20-\x7e]{0,40}$")


def _score(value: object, fallback: float) -> float:
    if value is None or value == "":
        return fallback
    try:
        return float(Decimal(str(value)))
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"invalid spam score {value!r}") from exc


def thresholds_for(
    policy: Mapping[str, Any], default: SpamThresholds = DEFAULT_THRESHOLDS
) -> SpamThresholds:
    """Thresholds from an effective filtering policy (``DomainData.policy``).

    Accepts plain values or the ``{"value": ..., "source": ...}`` form
    ``mail.policy.effective_filtering`` returns.
    """

    def get(key: str, fallback: float) -> float:
        value = policy.get(key)
        if isinstance(value, Mapping):
            value = value.get("value")
        return _score(value, fallback)

    return SpamThresholds(
        get("spam_tag_score", default.tag),
        get("spam_hold_score", default.hold),
        get("spam_reject_score", default.reject),
    )


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

    The highest action reached wins, so a policy with hold >= reject simply rejects.
    """
    if score >= thresholds.reject:
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
    roles = frozenset({"smtp"})
    # Debian 12 ships spamd separately from the spamassassin library and tools.
    packages = {"debian": ("spamassassin", "spamd", "spamc"), "rhel": ("spamassassin",)}
    config_root = "/etc/spamassassin"

    def __init__(self, *, config_root: str | None = None, extra_rules: str = "") -> None:
        if config_root is not None:
            self.config_root = config_root.rstrip("/")
        self.extra_rules = extra_rules

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

    def activate(self, conn: Connector, changed: list[ManagedFile]) -> None:
        """Make spamd re-read its configuration (SIGHUP), however it is supervised."""
        if not any(f.path.endswith((".cf", ".pre")) for f in changed):
            return  # only the thresholds file changed: the filter reads it per message
        # The unit is "spamd" on Debian and "spamassassin" on Rocky; without systemd
        # (containers, the test machines) signal the pid file's process directly.
        for unit in ("spamd", "spamassassin"):
            if conn.run(["systemctl", "try-reload-or-restart", unit]).ok:
                return
        pid = (conn.get_file("/run/spamd.pid") or b"").strip()
        if pid.isdigit():
            conn.run(["kill", "-HUP", pid.decode()]).check()
