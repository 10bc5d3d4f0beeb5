"""A small client of Zulip's REST API (https://zulip.com/api/): only the calls UMS makes.

Every call authenticates as the realm's administrator bot (HTTP basic: bot e-mail and API
key) and sends form-encoded parameters, JSON-encoding the structured ones, as the API
documents. A reply whose ``result`` is not ``"success"`` raises :class:`ZulipError` with
Zulip's own message. Nothing here knows about the database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import requests

TIMEOUT = 30


class ZulipError(Exception):
    """The server refused a call, or could not be reached; ``str`` says why."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class ZulipUser:
    user_id: int
    email: str  # the delivery e-mail where the server shows it, else the API e-mail
    full_name: str
    is_active: bool
    is_bot: bool


@dataclass(frozen=True)
class ZulipStream:
    stream_id: int
    name: str
    is_default: bool
    message_retention_days: int | None


class ZulipClient:
    def __init__(self, url: str, bot_email: str, api_key: str, *, session: Any = None) -> None:
        self.base = url.rstrip("/") + "/api/v1"
        self.session = session or requests.Session()
        self.session.auth = (bot_email, api_key)

    def _call(self, method: str, path: str, data: dict[str, Any] | None = None) -> dict:
        form = {
            key: value if isinstance(value, str) else json.dumps(value)
            for key, value in (data or {}).items()
        }
        try:
            response = self.session.request(
                method,
                self.base + path,
                params=form if method == "GET" else None,
                data=None if method == "GET" else form,
                timeout=TIMEOUT,
            )
        except requests.RequestException as exc:
            raise ZulipError(f"{self.base}: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            raise ZulipError(
                f"{method} {path}: HTTP {response.status_code}, not JSON",
                status=response.status_code,
            ) from None
        if not isinstance(body, dict) or body.get("result") != "success":
            message = body.get("msg", "") if isinstance(body, dict) else ""
            code = body.get("code", "") if isinstance(body, dict) else ""
            raise ZulipError(
                f"{method} {path}: {message or response.status_code}",
                status=response.status_code,
                code=str(code),
            )
        return body

    # ------------------------------------------------------------------ users
    def users(self) -> list[ZulipUser]:
        """GET /users: every user of the realm, deactivated ones included."""
        body = self._call("GET", "/users")
        return [
            ZulipUser(
                user_id=int(m["user_id"]),
                email=(m.get("delivery_email") or m["email"]).lower(),
                full_name=m.get("full_name", ""),
                is_active=bool(m.get("is_active", True)),
                is_bot=bool(m.get("is_bot", False)),
            )
            for m in body.get("members", [])
        ]

    def create_user(self, email: str, full_name: str, password: str) -> int:
        """POST /users; the new user's id."""
        body = self._call(
            "POST", "/users", {"email": email, "full_name": full_name, "password": password}
        )
        return int(body["user_id"])

    def deactivate_user(self, user_id: int) -> None:
        """DELETE /users/{user_id}."""
        self._call("DELETE", f"/users/{int(user_id)}")

    def reactivate_user(self, user_id: int) -> None:
        """POST /users/{user_id}/reactivate."""
        self._call("POST", f"/users/{int(user_id)}/reactivate")

    # ---------------------------------------------------------------- streams
    def streams(self) -> list[ZulipStream]:
        """GET /streams with ``include_default``: which ones are default streams."""
        body = self._call("GET", "/streams", {"include_default": True})
        return [
            ZulipStream(
                stream_id=int(s["stream_id"]),
                name=s["name"],
                is_default=bool(s.get("is_default", False)),
                message_retention_days=s.get("message_retention_days"),
            )
            for s in body.get("streams", [])
        ]

    def subscribe(self, names: list[str], principals: list[int]) -> None:
        """POST /users/me/subscriptions: creates missing streams and subscribes users."""
        self._call(
            "POST",
            "/users/me/subscriptions",
            {"subscriptions": [{"name": n} for n in names], "principals": principals},
        )

    def add_default_stream(self, stream_id: int) -> None:
        """POST /default_streams: new users of the realm join it."""
        self._call("POST", "/default_streams", {"stream_id": int(stream_id)})

    def set_retention(self, stream_id: int, days: int | None) -> None:
        """PATCH /streams/{stream_id}: ``message_retention_days`` (None: the realm's)."""
        value: int | str = "realm_default" if days is None else int(days)
        self._call(
            "PATCH", f"/streams/{int(stream_id)}", {"message_retention_days": json.dumps(value)}
        )
