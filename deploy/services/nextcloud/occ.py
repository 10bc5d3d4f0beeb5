"""Nextcloud's ``occ`` as argument lists: the facts it reports and the commands that
bring an instance to the desired state.

Everything here is pure except :func:`read_facts` (read-only ``occ`` calls). The plan
compares the facts with the desired state and returns only the commands for the
differences, so running it again after any failure finishes the work and a converged
instance gets no command at all (level-triggered).

The command lines are Nextcloud's documented ``occ`` ones: ``user:add
--password-from-env`` (the password arrives in ``OC_PASS``, never in an argument),
``user:setting <uid> files quota``, ``user:enable``/``user:disable``/``user:delete``,
``group:add``/``group:adduser``/``group:removeuser``, ``config:app:set``,
``config:system:set``, ``app:enable`` and the ``--output=json`` listings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .data import GROUP_RE, UID_RE, Account, NextcloudData

#: How ``occ`` is run on a cloud files node when ``nextcloud_occ`` is not set: as the web
#: server's user, from the installation directory of Debian/Rocky packaging guides.
DEFAULT_OCC = ("sudo", "-u", "www-data", "php", "/var/www/nextcloud/occ")
#: Page size of the user and group listings (occ's default limit is 500).
PAGE = 500
#: Reads a password on stdin into OC_PASS and runs the rest: a constant script, the
#: argument list follows as "$@"; the password never appears in a process listing.
WITH_PASSWORD = 'OC_PASS=$(cat); export OC_PASS; exec "$@"'  # noqa: S105 (a script)
S3_CLASS = "\\OC\\Files\\ObjectStore\\S3"
_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}
_QUOTA_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?b)?\s*$", re.IGNORECASE)
MAX_VALUE = 100_000
_VALUE_RE = re.compile(r"^[^\x00-\x1f\x7f]*$")

Run = Callable[[list[str]], str]


class OccError(RuntimeError):
    """An ``occ`` listing failed or printed something that is not what Nextcloud prints."""


@dataclass
class Facts:
    """What the instance has now."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> user:list --info
    groups: dict[str, list[str]] = field(default_factory=dict)  # gid -> members
    config: dict[str, dict[str, str]] = field(default_factory=dict)  # app -> key -> value
    enabled_apps: set[str] = field(default_factory=set)
    objectstore: dict[str, Any] | None = None


@dataclass
class Plan:
    commands: list[list[str]] = field(default_factory=list)
    #: Indexes of commands that need a fresh password on stdin (user:add).
    with_password: set[int] = field(default_factory=set)
    report: dict[str, Any] = field(default_factory=dict)

    def add(self, argv: list[str], *, password: bool = False) -> None:
        if password:
            self.with_password.add(len(self.commands))
        self.commands.append(argv)


def quota_bytes(value: object) -> int | None:
    """Bytes of an occ quota string ("1024 MB", "1 GB", "none"); None for unlimited."""
    text = str(value or "").strip().lower()
    if text in ("", "none", "default"):
        return None
    match = _QUOTA_RE.match(text)
    if not match:
        return -1  # something else: differs from any quota UMS sets
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()])


def quota_text(quota_mb: int) -> str:
    return f"{int(quota_mb)} MB" if quota_mb > 0 else "none"


def _json(output: str, what: str) -> Any:
    try:
        return json.loads(output or "null")
    except ValueError as exc:
        raise OccError(f"occ {what}: not JSON: {output[:200]!r}") from exc


def read_facts(run: Run, apps: Sequence[str]) -> Facts:
    """Read the instance with occ's JSON listings (pages of :data:`PAGE`)."""
    facts = Facts()
    offset = 0
    while True:
        page = _json(
            run(["user:list", "--info", "--output=json", f"--limit={PAGE}", f"--offset={offset}"]),
            "user:list",
        )
        if not isinstance(page, dict):
            raise OccError("occ user:list: expected an object")
        for uid, info in page.items():
            facts.users[str(uid)] = info if isinstance(info, dict) else {"display_name": info}
        if len(page) < PAGE:
            break
        offset += PAGE
    offset = 0
    while True:
        page = _json(
            run(["group:list", "--output=json", f"--limit={PAGE}", f"--offset={offset}"]),
            "group:list",
        )
        if not isinstance(page, dict):
            raise OccError("occ group:list: expected an object")
        for gid, members in page.items():
            facts.groups[str(gid)] = [str(m) for m in (members or [])]
        if len(page) < PAGE:
            break
        offset += PAGE
    for app in apps:
        listing = _json(run(["config:list", app, "--output=json"]), "config:list")
        values = ((listing or {}).get("apps") or {}).get(app) or {}
        facts.config[app] = {str(k): str(v) for k, v in values.items()}
    listing = _json(run(["app:list", "--output=json"]), "app:list")
    facts.enabled_apps = set(((listing or {}).get("enabled") or {}).keys())
    return facts


def _check_value(key: str, value: str) -> str:
    # The group lists grow with the customers (~12 bytes each); one argument may hold up
    # to 128 KiB (Linux MAX_ARG_STRLEN), so 100,000 characters is ~8,000 customers.
    if not _VALUE_RE.match(value) or len(value) > MAX_VALUE:
        raise ValueError(f"invalid Nextcloud config value for {key}: {value[:80]!r}")
    return value


def share_config(data: NextcloudData) -> dict[str, str]:
    """``core`` app config for the customers' share policies.

    Nextcloud's sharing settings are instance-wide; per customer they are expressed with
    its per-group exclusions: groups denied public links, groups excluded from sharing,
    groups exempt from the link password. Link expiry has no per-group setting, so the
    strictest expiry of the customers on the instance applies to all of them (say so in
    the portal). Sharing stays within a user's own groups: customers never see each other.
    """
    groups = sorted(data.groups, key=lambda g: g.group)
    no_links = [g.group for g in groups if not g.external_links]
    no_shares = [g.group for g in groups if not g.internal_shares]
    password = [g for g in groups if g.external_links and g.password_required]
    no_password = [g.group for g in groups if not g.password_required]
    days = sorted(g.expire_days for g in groups if g.expire_days > 0)
    any_links = any(g.external_links for g in groups)
    config = {
        "shareapi_enabled": "yes",
        "shareapi_only_share_with_group_members": "yes",
        "shareapi_allow_links": "yes" if any_links else "no",
        "shareapi_allow_links_exclude_groups": json.dumps(no_links),
        "shareapi_exclude_groups": "yes" if no_shares else "no",
        "shareapi_exclude_groups_list": json.dumps(no_shares),
        "shareapi_enforce_links_password": "yes" if password else "no",
        "shareapi_enforce_links_password_excluded_groups": json.dumps(
            no_password if password else []
        ),
        "shareapi_default_expire_date": "yes" if days else "no",
        "shareapi_enforce_expire_date": "yes" if days else "no",
    }
    if days:
        config["shareapi_expire_after_n_days"] = str(days[0])
    return config


def plan(
    facts: Facts,
    data: NextcloudData,
    *,
    app_config: Mapping[str, Mapping[str, str]],
    apps: Sequence[str],
    objectstore: Mapping[str, Any] | None,
) -> Plan:
    """The occ commands (without the occ prefix) that bring ``facts`` to the desired state."""
    result = Plan()
    accounts: dict[str, Account] = {}
    skipped: list[str] = []
    for a in data.accounts:
        if UID_RE.match(a.uid):
            accounts[a.uid] = a
        else:
            skipped.append(a.uid)
    if skipped:
        result.report["skipped"] = sorted(skipped)
    groups = {g.group: g for g in data.groups if GROUP_RE.match(g.group)}
    # Memberships in UMS's groups only: a user in none of them is not UMS's to manage.
    member_of: dict[str, set[str]] = {}
    for gid, members in facts.groups.items():
        if GROUP_RE.match(gid):
            for uid in members:
                member_of.setdefault(uid, set()).add(gid)

    for gid in sorted({a.group for a in accounts.values()} | set(groups)):
        if gid not in facts.groups:
            name = groups[gid].display_name if gid in groups else gid
            result.add(["group:add", f"--display-name={name}", gid])

    for uid, account in sorted(accounts.items()):
        user = facts.users.get(uid)
        wanted_quota = quota_text(account.quota_mb)
        if user is None:
            if not (account.files and account.enabled):
                continue
            result.add(
                [
                    "user:add",
                    "--password-from-env",
                    f"--display-name={account.display_name}",
                    f"--group={account.group}",
                    f"--email={uid}",
                    uid,
                ],
                password=True,
            )
            result.add(["user:setting", uid, "files", "quota", wanted_quota])
            continue
        mine = member_of.get(uid, set())
        if account.group not in mine:
            result.add(["group:adduser", account.group, uid])
        if len(mine) > 1 or account.group not in mine:
            for other in sorted(mine - {account.group}):
                result.add(["group:removeuser", other, uid])
        have = user.get("quota")
        if have != wanted_quota and quota_bytes(have) != quota_bytes(wanted_quota):
            result.add(["user:setting", uid, "files", "quota", wanted_quota])
        should_enable = account.files and account.enabled
        if bool(user.get("enabled", True)) != should_enable:
            result.add(["user:enable" if should_enable else "user:disable", uid])

    # Deprovisioning: a user in a UMS group whose mailbox no longer exists.
    gone = sorted(uid for uid in member_of if uid not in accounts and uid in facts.users)
    for uid in gone:
        result.add(["user:delete", uid])
    if gone:
        result.report["deleted"] = gone

    for app in apps:
        if app != "core" and app not in facts.enabled_apps:
            result.add(["app:enable", app])
    for app, values in app_config.items():
        have = facts.config.get(app, {})
        for key, value in values.items():
            if have.get(key) != value:
                result.add(["config:app:set", app, key, f"--value={_check_value(key, value)}"])

    if objectstore is not None and facts.objectstore != objectstore:
        result.add(["config:system:set", "objectstore", "class", f"--value={objectstore['class']}"])
        for key, value in sorted(objectstore.get("arguments", {}).items()):
            kind = "string"
            if isinstance(value, bool):
                kind = "boolean"
            elif isinstance(value, int):
                kind = "integer"
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            result.add(
                [
                    "config:system:set",
                    "objectstore",
                    "arguments",
                    key,
                    f"--value={_check_value(key, text)}",
                    f"--type={kind}",
                ]
            )
    return result
