"""Nextcloud (cloud files) on ``cloudfiles`` nodes: accounts, groups, share policy,
antivirus on uploads, the office wiring and the storage backend, all through ``occ``.

Like the ZFS mail store this service manages no files: its state lives in Nextcloud's
database. :meth:`NextcloudService.prepare` reads the instance with occ's JSON listings
and plans only the commands that differ (:func:`.occ.plan`); converge runs them in
:meth:`NextcloudService.apply_preparation`. Every command is idempotent against the facts
read first, so a converge killed half-way is finished by the next one.

Passwords: an account is created with a random password the controller does not keep
(given to ``occ user:add --password-from-env`` on stdin). Users sign in with their
mailbox credentials through the instance's authentication backend; the controller
itself never needs a user's password (share revocation uses short-lived app tokens,
see :mod:`.ocs`).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from typing import Any

from deploy.connector.base import Connector
from deploy.services.base import DesiredState, ManagedFile, Preparation, PrepareFailed, Service
from deploy.services.clamav import CLAMD_TCP
from deploy.services.collabora import config as collabora_config

from . import occ
from .data import NextcloudData

S3_KEYS = {"bucket", "hostname", "port", "region", "use_ssl", "use_path_style", "key", "secret",
           "autocreate"}  # fmt: skip
#: Nextcloud's usage report app (app store): the usage collection reads its report.
USAGE_REPORT_APP = "user_usage_report"
#: richdocuments app setting holding :func:`office_activation` of the activated settings.
OFFICE_MARKER = "ums_activated"
_HOST_RE = re.compile(r"^[A-Za-z0-9.-]{1,253}$|^[0-9a-fA-F:]{2,39}$")


def occ_prefix(settings: Mapping[str, Any]) -> list[str]:
    prefix = list(settings.get("nextcloud_occ") or occ.DEFAULT_OCC)
    if not prefix or not all(isinstance(p, str) and p for p in prefix):
        raise PrepareFailed("nextcloud: nextcloud_occ must be a non-empty list of strings")
    return prefix


def nextcloud_data(state: DesiredState) -> NextcloudData | None:
    """The accounts and groups of the node; None when nothing built them (the cloud files
    app is not installed): then converge leaves Nextcloud alone rather than treat every
    account as gone."""
    data = state.extra.get("nextcloud")
    return data if isinstance(data, NextcloudData) else None


def office_config(state: DesiredState) -> dict[str, str] | None:
    """richdocuments (Nextcloud Office) pointed at the office nodes, or None without any.

    ``wopi_url``: the office name on the load balancers (their TLS; the name nginx and
    coolwsd's ``server_name`` use), else the first office node. ``wopi_allowlist``: the
    office nodes' addresses, the only hosts whose WOPI requests Nextcloud answers.
    """
    offices = state.nodes_by_role.get("office") or []
    if not offices:
        return None
    try:
        host = collabora_config.public_name(state, "office") or offices[0][1]
    except collabora_config.InvalidOfficeValue as exc:
        raise PrepareFailed(f"nextcloud: {exc}") from exc
    addresses = sorted({address for _name, address in offices})
    for value in (host, *addresses):
        if not _HOST_RE.match(value):
            raise PrepareFailed(f"nextcloud: invalid office host {value!r}")
    return {
        "wopi_url": f"https://{host}",
        "wopi_allowlist": ",".join(addresses),
        "disable_certificate_verification": "",
    }


def office_activation(config: Mapping[str, str]) -> str:
    """The marker of the richdocuments settings last activated (``richdocuments:activate-config``
    fetches discovery from ``wopi_url`` and caches it; a converge cut off between the
    settings and the activation activates on the next run because the marker differs)."""
    text = json.dumps(dict(sorted(config.items())))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def antivirus_config(state: DesiredState) -> dict[str, str] | None:
    """files_antivirus in daemon mode against the node's own clamd (loopback TCP)."""
    if not state.settings.get("files_antivirus", True):
        return None
    max_mb = int(state.settings.get("clamav_max_file_size_mb") or 25)
    return {
        "av_mode": "daemon",
        "av_host": CLAMD_TCP[0],
        "av_port": str(CLAMD_TCP[1]),
        "av_stream_max_length": str(max_mb * 1024 * 1024),
        "av_infected_action": "delete",
    }


def objectstore(settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The S3 primary storage from ``nextcloud_s3``, or None for local storage."""
    if (settings.get("nextcloud_storage") or "local") != "s3":
        return None
    s3 = dict(settings.get("nextcloud_s3") or {})
    if not s3.get("bucket"):
        raise PrepareFailed("nextcloud: nextcloud_storage is s3 but nextcloud_s3 has no bucket")
    unknown = set(s3) - S3_KEYS
    if unknown:
        raise PrepareFailed(f"nextcloud: unknown nextcloud_s3 keys {sorted(unknown)}")
    return {"class": occ.S3_CLASS, "arguments": s3}


class NextcloudService(Service):
    name = "nextcloud"
    roles = frozenset({"cloudfiles"})
    #: Nextcloud is not packaged for Debian/Rocky: installed by the operator; converge
    #: manages its accounts and settings only.
    packages: dict[str, tuple[str, ...]] = {}
    config_root = ""

    def render(self, state: DesiredState) -> list[ManagedFile]:
        return []

    def validate(self, conn: Connector, staged_root: str) -> None:
        return None

    def activate(self, conn: Connector, changed: list[ManagedFile]) -> None:
        return None

    def desired_config(
        self, state: DesiredState, data: NextcloudData
    ) -> tuple[dict[str, dict[str, str]], list[str]]:
        config: dict[str, dict[str, str]] = {"core": occ.share_config(data)}
        # user_usage_report: `occ usage-report:generate`, the used space of every user in
        # one command (the usage collection, cloudfiles.collect).
        apps = ["core", USAGE_REPORT_APP]
        antivirus = antivirus_config(state)
        if antivirus is not None:
            config["files_antivirus"] = antivirus
            apps.append("files_antivirus")
        office = office_config(state)
        if office is not None:
            config["richdocuments"] = office
            apps.append("richdocuments")
        return config, apps

    def prepare(self, conn: Connector, state: DesiredState) -> Preparation | None:
        data = nextcloud_data(state)
        if data is None:
            return Preparation(report={"skipped": "no cloud files data for this node"})
        prefix = occ_prefix(state.settings)

        def run(args: list[str]) -> str:
            result = conn.run([*prefix, *args], timeout=600)
            if not result.ok:
                raise PrepareFailed(
                    f"nextcloud: occ {args[0]} failed: {(result.stderr or result.stdout).strip()}"
                )
            return result.stdout

        config, apps = self.desired_config(state, data)
        try:
            facts = occ.read_facts(run, apps)
            store = objectstore(state.settings)
            if store is not None:
                got = conn.run([*prefix, "config:system:get", "objectstore", "--output=json"])
                found = got.ok and got.stdout.strip()
                facts.objectstore = json.loads(got.stdout) if found else None
            planned = occ.plan(facts, data, app_config=config, apps=apps, objectstore=store)
            office = config.get("richdocuments")
            marker = office_activation(office) if office is not None else ""
            if marker and facts.config.get("richdocuments", {}).get(OFFICE_MARKER) != marker:
                planned.add(["richdocuments:activate-config"])
                planned.add(["config:app:set", "richdocuments", OFFICE_MARKER, f"--value={marker}"])
        except (occ.OccError, ValueError) as exc:
            raise PrepareFailed(f"nextcloud: {exc}") from exc
        report = dict(planned.report)
        report["accounts"] = sum(1 for a in data.accounts if a.files)
        if data.over_limit:
            report["over_limit"] = list(data.over_limit)
        commands = [
            ["sh", "-c", occ.WITH_PASSWORD, "sh", *prefix, *argv]
            if index in planned.with_password
            else [*prefix, *argv]
            for index, argv in enumerate(planned.commands)
        ]
        return Preparation(
            commands=commands, report=report, data={"with_password": planned.with_password}
        )

    def apply_preparation(self, conn: Connector, preparation: Preparation) -> None:
        with_password = preparation.data.get("with_password") or set()
        for index, argv in enumerate(preparation.commands):
            stdin = secrets.token_urlsafe(32) if index in with_password else ""
            result = conn.run(argv, input=stdin.encode() if stdin else None, timeout=600)
            if not result.ok:
                shown = argv[argv.index("sh", 1) + 1 :] if index in with_password else argv
                raise PrepareFailed(
                    f"nextcloud: {' '.join(shown)} failed: "
                    f"{(result.stderr or result.stdout).strip()}"
                )


SERVICE = NextcloudService()
