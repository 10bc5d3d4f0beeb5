"""Rule and signature updates on SMTP nodes from a configurable mirror, on a schedule.

Beat runs ``deploy.update_rules`` every ``UMS_RULES_UPDATE_INTERVAL`` seconds; it queues
one job ``node.update_rules`` per active SMTP node. The job sends
``node_update.py`` (stdlib Python run on the node) the mirror ``UMS_RULES_MIRROR_URL``,
the SpamAssassin channels ``UMS_SA_UPDATE_CHANNELS`` and the ClamAV signature files
``UMS_CLAMAV_SIGNATURES``; the node fetches, checks (sha256/sha512, sa-update's lint,
``spamassassin --lint``, ``clamscan`` with the new file alone and a clean sample),
installs, reloads and probes, and rolls back on any failure (see node_update.py). The
result is kept on the node (``Node.rule_updates``) and shown on its page.

GPG: every channel must have a signing key an operator configured
(:mod:`deploy.rule_updates.keys`, ``/api/v1/rule-channel-keys/``); the node imports it
into ``SA_GPG_HOME`` and sa-update verifies each archive's ``.asc`` with it. ClamAV's
signature files are checked by checksum and a test scan only (see the README: freshclam's
CVD signatures use ClamAV's own key, which a private mirror cannot sign with).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.utils import timezone

from deploy.connector.base import Connector

SCRIPT = (Path(__file__).with_name("node_update.py")).read_text()
#: SpamAssassin's own update directory would replace the packaged rules (see node_update).
SA_UPDATE_DIR = "/var/lib/ums-updates/spamassassin"
SA_SITE_DIR = "/etc/spamassassin"
#: sa-update's own keyring (its default ``--gpghomedir``), named explicitly on the node.
SA_GPG_HOME = "/etc/spamassassin/sa-update-keys"
CLAMD_TCP_PORT = 3310
_CHANNEL = re.compile(
    r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$"
)
_SIGNATURE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}\.(ndb|hdb|hsb|ldb|fp|ign2)$")


class InvalidUpdateSettings(ValueError):
    """A mirror URL, channel or signature name that must not reach the node."""


def mirror_url() -> str:
    url = (getattr(settings, "UMS_RULES_MIRROR_URL", "") or "").strip()
    if not url:
        return ""
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or any(c.isspace() or ord(c) < 32 for c in url)
    ):
        raise InvalidUpdateSettings(f"UMS_RULES_MIRROR_URL must be an http(s) URL: {url!r}")
    return url.rstrip("/")


def channels() -> list[str]:
    names = list(getattr(settings, "UMS_SA_UPDATE_CHANNELS", []) or [])
    for name in names:
        if not _CHANNEL.match(name):
            raise InvalidUpdateSettings(f"not a SpamAssassin channel name: {name!r}")
    return names


def signatures() -> list[str]:
    names = list(getattr(settings, "UMS_CLAMAV_SIGNATURES", []) or [])
    for name in names:
        if not _SIGNATURE.match(name):
            raise InvalidUpdateSettings(f"not a ClamAV signature file name: {name!r}")
    return names


def enabled() -> bool:
    """Whether updates are configured; raises InvalidUpdateSettings for any bad value."""
    url, names, files = mirror_url(), channels(), signatures()
    return bool(url and (names or files))


def node_arguments(conn: Connector) -> dict[str, Any]:
    """What node_update.py needs, with the paths the node's live configuration uses."""
    from deploy.services.clamav import SERVICE as CLAMAV
    from deploy.services.spamassassin import SPAMD_PORT
    from deploy.services.spamassassin.service import SPAMD_PIDFILE

    dbdir = "/var/lib/clamav"
    conf = CLAMAV._live_conf(conn)
    if conf is not None:
        for line in conf.content.decode(errors="replace").splitlines():
            key, _sep, value = line.partition(" ")
            if key == "DatabaseDirectory" and value.startswith("/"):
                dbdir = value.strip()
    from .keys import node_keys

    names = channels()
    return {
        "mirror": mirror_url(),
        "channels": names,
        "keys": node_keys(names),
        "sa_gpghomedir": SA_GPG_HOME,
        "signatures": signatures(),
        "sa_updatedir": SA_UPDATE_DIR,
        "sa_siteconfig": SA_SITE_DIR,
        "spamd_pidfile": SPAMD_PIDFILE,
        "spamd_port": SPAMD_PORT,
        "clamav_dbdir": dbdir,
        "clamd_port": CLAMD_TCP_PORT,
        "wait": 60,
    }


def run_update(conn: Connector, python: str = "/usr/bin/python3") -> dict[str, Any]:
    """Run the updater on the node; its per-channel and per-file results."""
    args = node_arguments(conn)
    result = conn.run([python, "-c", SCRIPT, json.dumps(args)], timeout=1800)
    if not result.ok:
        raise RuntimeError((result.stderr or result.stdout).strip()[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def failures(outcome: dict[str, Any]) -> list[str]:
    return [
        f"{name}: {entry.get('error', '')}"
        for part in outcome.values()
        for name, entry in part.items()
        if entry.get("status") == "failed"
    ]


def record(previous: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any]:
    """The node's new ``rule_updates`` value after a run."""
    now = timezone.now().isoformat()
    updated = any(e.get("status") == "updated" for part in outcome.values() for e in part.values())
    return {
        **outcome,
        "checked_at": now,
        "updated_at": now if updated else previous.get("updated_at"),
        "errors": failures(outcome),
    }
