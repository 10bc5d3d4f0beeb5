"""Nextcloud's OCS sharing API, for revoking external links (public and e-mail links).

Nextcloud lists and deletes shares only as their owner ("Get all shares from the user"),
so each user's links are handled with a short-lived app password: ``occ
user:auth-tokens:add <uid>`` creates it, the OCS calls use it with basic auth and the
``OCS-APIRequest: true`` header, and ``occ user:auth-tokens:delete`` removes it again
(also after a failure). The controller keeps no user's password or token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from deploy.connector.base import Connector
from deploy.services.base import NodeView

SHARES_PATH = "/ocs/v2.php/apps/files_sharing/api/v1/shares"
#: Share types that reach people outside the instance: public link, e-mail link.
EXTERNAL_TYPES = (3, 4)
_URL_RE = re.compile(r"^https?://[A-Za-z0-9.:\[\]-]+(?::[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$")
TIMEOUT = 30


class OcsError(RuntimeError):
    pass


def base_url(node: NodeView, settings: Mapping[str, Any]) -> str:
    """Where the node's Nextcloud answers: ``nextcloud_url`` (``{address}`` is the node's
    address), else https on the load balancers' cloud files name, else on the node."""
    template = settings.get("nextcloud_url") or ""
    if template:
        url = template.replace("{address}", node.address)
    else:
        host = (settings.get("web_hostnames") or {}).get("cloudfiles") or node.address
        url = f"https://{host}"
    url = url.rstrip("/")
    if not _URL_RE.match(url):
        raise OcsError(f"invalid Nextcloud URL {url!r}")
    return url


def _meta_ok(body: Any) -> bool:
    meta = (body or {}).get("ocs", {}).get("meta", {}) if isinstance(body, dict) else {}
    return meta.get("status") == "ok" and int(meta.get("statuscode", 0)) in (100, 200)


@dataclass
class OcsClient:
    """OCS calls as one user, authenticated with an app password."""

    url: str
    uid: str
    password: str
    verify: bool = True
    session: requests.Session = field(default_factory=requests.Session)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.session.request(
            method,
            self.url + path,
            auth=(self.uid, self.password),
            headers={"OCS-APIRequest": "true", "Accept": "application/json"},
            params={"format": "json", **kwargs.pop("params", {})},
            timeout=TIMEOUT,
            verify=self.verify,
            **kwargs,
        )
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400 or not _meta_ok(body):
            message = (
                body.get("ocs", {}).get("meta", {}).get("message", "")
                if isinstance(body, dict)
                else response.text[:200]
            )
            raise OcsError(f"{method} {path} as {self.uid}: HTTP {response.status_code} {message}")
        return body["ocs"].get("data")

    def shares(self) -> list[dict[str, Any]]:
        data = self._call("GET", SHARES_PATH)
        return list(data or [])

    def delete_share(self, share_id: str) -> None:
        self._call("DELETE", f"{SHARES_PATH}/{int(share_id)}")


Occ = Callable[[list[str]], str]


def app_token(occ: Occ, uid: str) -> tuple[str, list[str]]:
    """A new app password for ``uid`` and the ids of the tokens it created."""
    listing = ["user:auth-tokens:list", uid, "--output=json"]
    before = {str(t.get("id")) for t in json.loads(occ(listing) or "[]")}
    output = occ(["user:auth-tokens:add", uid])
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        raise OcsError(f"occ user:auth-tokens:add {uid} printed no token")
    token = lines[-1]
    after = json.loads(occ(listing) or "[]")
    created = [str(t.get("id")) for t in after if str(t.get("id")) not in before]
    return token, created


@dataclass
class RevokeResult:
    revoked: int = 0
    kept: int = 0
    users: int = 0
    errors: list[str] = field(default_factory=list)


def revoke_external_links(
    conn: Connector,
    occ_prefix: list[str],
    url: str,
    uids: Iterable[str],
    *,
    verify: bool = True,
    progress: Callable[[str, int], None] | None = None,
) -> RevokeResult:
    """Delete every public and e-mail link owned by ``uids``; other shares are kept."""
    result = RevokeResult()

    def occ(args: list[str]) -> str:
        run = conn.run([*occ_prefix, *args], timeout=120)
        if not run.ok:
            raise OcsError(f"occ {args[0]} failed: {(run.stderr or run.stdout).strip()}")
        return run.stdout

    for uid in uids:
        token, created = app_token(occ, uid)
        try:
            client = OcsClient(url, uid, token, verify=verify)
            revoked = 0
            for share in client.shares():
                external = int(share.get("share_type", -1)) in EXTERNAL_TYPES
                if external and share.get("uid_owner", uid) == uid:
                    client.delete_share(str(share["id"]))
                    revoked += 1
                else:
                    result.kept += 1
            result.revoked += revoked
            result.users += 1
            if progress is not None:
                progress(uid, revoked)
        finally:
            for token_id in created:
                conn.run([*occ_prefix, "user:auth-tokens:delete", uid, token_id], timeout=120)
    return result
