"""A stand-in for a Zulip server, for tests only.

Why a stand-in: the Zulip server cannot be installed on the test machines (it needs its
own PostgreSQL cluster, RabbitMQ, memcached, Redis, nginx and a dedicated host; its
installer refuses anything else). So this is an HTTP server implementing the few REST
endpoints UMS calls, with the behaviour Zulip documents for them, and **every request
and every response is validated against the operations' schemas** transcribed from
Zulip's published OpenAPI document (``openapi.json`` beside this file, with its source
and commit). A request UMS sends that the document would not accept is answered with
Zulip's error shape *and* recorded in :attr:`ZulipStandIn.violations`; tests assert that
list is empty. The product's client (``chat/zulip.py``) is exactly what talks to a real
server: nothing in the product knows about this file.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jsonschema

SPEC = json.loads((Path(__file__).parent / "openapi.json").read_text())
_PATHS = [
    (method, re.compile("^/api/v1" + re.sub(r"\{(\w+)\}", r"(?P<\1>\\d+)", path) + "$"), key)
    for key in SPEC["operations"]
    for method, path in [key.split(" ", 1)]
]


def _schema(schema: dict) -> dict:
    """``schema`` with the spec's components resolvable by ``$ref``."""
    return {**schema, "components": SPEC["components"]}


def validate(schema: dict, value: Any) -> str | None:
    try:
        jsonschema.validate(value, _schema(schema))
    except jsonschema.ValidationError as exc:
        return f"{exc.message} at {list(exc.absolute_path)}"
    return None


class ZulipStandIn:
    """One realm: its users and streams in memory; ``url`` once started."""

    def __init__(self, bot_email: str = "ums-bot@chat.example", api_key: str = "k" * 32) -> None:
        self.bot_email, self.api_key = bot_email, api_key
        self.lock = threading.Lock()
        self.violations: list[str] = []
        self.calls: list[str] = []
        self.users: dict[int, dict] = {}
        self.streams: dict[int, dict] = {}
        self.subscribers: dict[int, set[int]] = {}
        self.defaults: set[int] = set()
        self._next = 10
        self._add_user(bot_email, "UMS bot", is_bot=True, role=200)
        self._add_user("owner@elsewhere.example", "Realm Owner", role=100)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ZulipStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---------------------------------------------------------------- state
    def _id(self) -> int:
        self._next += 1
        return self._next

    def _add_user(
        self, email: str, full_name: str, *, is_bot: bool = False, role: int = 400
    ) -> int:
        uid = self._id()
        self.users[uid] = {
            "user_id": uid,
            "email": f"user{uid}@chat.example",  # Zulip's API e-mail when addresses are hidden
            "delivery_email": email,
            "full_name": full_name,
            "is_active": True,
            "is_bot": is_bot,
            "role": role,
            "is_admin": role <= 200,
            "is_owner": role == 100,
            "is_guest": role == 600,
            "is_billing_admin": False,
            "timezone": "",
            "date_joined": "2026-12-07T10:00:00+00:00",
            "avatar_url": None,
            "avatar_version": 1,
        }
        if is_bot:
            self.users[uid].update(bot_type=1, bot_owner_id=None)
        return uid

    def active_emails(self) -> set[str]:
        return {
            u["delivery_email"] for u in self.users.values() if u["is_active"] and not u["is_bot"]
        }

    def stream_named(self, name: str) -> dict | None:
        return next((s for s in self.streams.values() if s["name"] == name), None)

    def subscriber_emails(self, name: str) -> set[str]:
        stream = self.stream_named(name)
        ids = self.subscribers.get(stream["stream_id"], set()) if stream else set()
        return {self.users[i]["delivery_email"] for i in ids}

    # ------------------------------------------------------------- handlers
    def _op(self, key: str, params: dict, args: dict, caller: int) -> tuple[int, dict]:
        users, streams = self.users, self.streams
        if key == "GET /users":
            return 200, {"result": "success", "msg": "", "members": list(users.values())}
        if key == "POST /users":
            email = params["email"].lower()
            if any(u["delivery_email"] == email for u in users.values()):
                return 400, _error(f"Email '{email}' already in use")
            return 200, {
                "result": "success", "msg": "",
                "user_id": self._add_user(email, params["full_name"]),
            }  # fmt: skip
        if key in ("DELETE /users/{user_id}", "POST /users/{user_id}/reactivate"):
            user = users.get(int(args["user_id"]))
            if user is None or user["is_bot"]:
                return 400, _error("No such user", "BAD_REQUEST")
            active = key.startswith("POST")
            if user["is_active"] == active:
                word = "active" if active else "deactivated"
                return 400, _error(f"User is already {word}", "BAD_REQUEST")
            user["is_active"] = active
            return 200, {"result": "success", "msg": ""}
        if key == "GET /streams":
            listed = [
                {
                    **s,
                    **(
                        {"is_default": sid in self.defaults}
                        if params.get("include_default")
                        else {}
                    ),
                }
                for sid, s in streams.items()
            ]
            return 200, {"result": "success", "msg": "", "streams": listed}
        if key == "POST /users/me/subscriptions":
            principals = params.get("principals", [caller])
            for p in principals:
                if p not in users:
                    return 400, _error(f"No such user: {p}", "BAD_REQUEST")
            subscribed: dict[str, list[str]] = {}
            already: dict[str, list[str]] = {}
            for sub in params["subscriptions"]:
                stream = self.stream_named(sub["name"])
                if stream is None:
                    sid = self._id()
                    stream = streams[sid] = {
                        "stream_id": sid, "name": sub["name"],
                        "description": sub.get("description", ""),
                        "rendered_description": "", "date_created": int(time.time()),
                        "invite_only": False, "is_web_public": False,
                        "history_public_to_subscribers": True, "first_message_id": None,
                        "message_retention_days": None, "is_archived": False,
                    }  # fmt: skip
                members = self.subscribers.setdefault(stream["stream_id"], set())
                for p in principals:
                    target = already if p in members else subscribed
                    target.setdefault(str(p), []).append(stream["name"])
                    members.add(p)
            return 200, {
                "result": "success", "msg": "", "subscribed": subscribed,
                "already_subscribed": already,
            }  # fmt: skip
        if key == "POST /default_streams":
            sid = int(params["stream_id"])
            if sid not in streams:
                return 400, _error("Invalid channel ID", "BAD_REQUEST")
            self.defaults.add(sid)
            return 200, {"result": "success", "msg": ""}
        if key == "PATCH /streams/{stream_id}":
            stream = streams.get(int(args["stream_id"]))
            if stream is None:
                return 400, _error("Invalid channel ID", "BAD_REQUEST")
            if "message_retention_days" in params:
                value = params["message_retention_days"]
                stream["message_retention_days"] = (
                    None if value == "realm_default" else (-1 if value == "unlimited" else value)
                )
            return 200, {"result": "success", "msg": ""}
        raise AssertionError(key)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                body = b""
                if self.command != "GET":
                    body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, reply = standin.handle(
                    self.command, parts.path, parts.query, body,
                    self.headers.get("Content-Type", ""), self.headers.get("Authorization", ""),
                )  # fmt: skip
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _serve

        return Handler

    def handle(
        self, method: str, path: str, query: str, body: bytes, ctype: str, auth: str
    ) -> tuple[int, dict]:
        with self.lock:
            self.calls.append(f"{method} {path}")
            caller = self._authenticate(auth)
            if caller is None:
                return 401, _error("Invalid API key", "INVALID_API_KEY")
            match = [
                (key, m) for verb, rx, key in _PATHS if verb == method and (m := rx.match(path))
            ]
            if not match:
                self.violations.append(f"{method} {path}: not an operation of the document")
                return 404, _error("Not found", "BAD_REQUEST")
            key, found = match[0]
            operation = SPEC["operations"][key]
            if method != "GET" and body and "application/x-www-form-urlencoded" not in ctype:
                self.violations.append(f"{key}: body sent as {ctype!r}, not form-encoded")
            raw = dict(
                parse_qsl(query if method == "GET" else body.decode(), keep_blank_values=True)
            )
            params, problem = _decode(operation["request"], raw)
            problem = problem or validate(operation["request"], params)
            if problem:
                self.violations.append(f"{key} request: {problem}")
                return 400, _error(problem, "BAD_REQUEST")
            status, reply = self._op(key, params, found.groupdict(), caller)
            schema = operation["response"] if status == 200 else {"$ref": "#/components/CodedError"}
            problem = validate(schema, reply)
            if problem:
                self.violations.append(f"{key} response {status}: {problem}")
            return status, reply

    def _authenticate(self, header: str) -> int | None:
        if not header.startswith("Basic "):
            return None
        try:
            email, _sep, key = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        if email != self.bot_email or key != self.api_key:
            return None
        return next(uid for uid, u in self.users.items() if u["delivery_email"] == email)


def _decode(schema: dict, raw: dict[str, str]) -> tuple[dict, str | None]:
    """Form values as typed values: JSON-decoded where the document says so."""
    props = schema.get("properties", {})
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if props.get(key, {}).get("x-json") or props.get(key, {}).get("type") == "integer":
            try:
                params[key] = json.loads(value)
            except ValueError:
                return {}, f"{key}: not JSON: {value!r}"
        else:
            params[key] = value
    return params, None


def _error(msg: str, code: str = "BAD_REQUEST") -> dict:
    return {"result": "error", "msg": msg, "code": code}
