#!/usr/bin/env python3
"""STAND-IN for Nextcloud (tests only): its ``occ`` command lines and its OCS API.

Nextcloud cannot be installed on the test machines (no PHP application server, no
database for it), so this small program implements the published interface the product
uses, with the documented request and response shapes, over one JSON state file:

* ``standin.py occ <command> ...``: the ``occ`` commands deploy/services/nextcloud runs
  (user:list --info/group:list/config:list/app:list with ``--output=json``, user:add
  with ``--password-from-env`` reading ``OC_PASS``, user:setting, user:enable/disable/
  delete, group:add/adduser/removeuser, config:app:set/get, config:system:set/get,
  app:enable, richdocuments:activate-config (Nextcloud Office), user:auth-tokens:add/
  list/delete, and ``usage-report:generate`` of the ``user_usage_report`` app, answered
  only once that app is enabled);
* users' files: the data directory layout of Nextcloud, ``<data>/<uid>/files/``
  (``$NEXTCLOUD_STANDIN_DATA`` or ``data/`` beside the state file); a test "uploads" by
  writing a file there, and the used space reported is the size of that tree (what
  Nextcloud's file cache holds for the home storage's ``files`` folder);
* ``standin.py serve <address> <port>``: the OCS endpoints over HTTP with basic auth (an
  app password) and the ``OCS-APIRequest: true`` header: the sharing API
  (``/ocs/v2.php/apps/files_sharing/api/v1/shares`` GET/POST, ``/shares/<id>`` DELETE)
  and the provisioning API (``/ocs/v1.php/cloud/users/<uid>`` GET). Creating a public
  link honours the ``core`` share settings (links allowed, excluded groups, password
  enforcement), so the share policy UMS sets is observable from outside.

Standard library only; the state file is ``$NEXTCLOUD_STANDIN_STATE`` or
``/var/lib/nextcloud-standin/state.json`` (a private path on each test node).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

STATE = Path(os.environ.get("NEXTCLOUD_STANDIN_STATE", "/var/lib/nextcloud-standin/state.json"))
EMPTY = {
    "users": {},
    "groups": {},
    "config": {},
    "system": {},
    "apps": ["files", "files_sharing", "dav"],
    "tokens": {},
    "shares": [],
    "next_id": 1,
}
DATA = Path(os.environ.get("NEXTCLOUD_STANDIN_DATA", str(STATE.parent / "data")))
#: FileInfo::SPACE_UNKNOWN: what the usage report prints for a user with no size yet.
SPACE_UNKNOWN = -2
FLAGS = {"--password-from-env", "--info", "--reset-password", "--force", "--verbose"}


@contextlib.contextmanager
def state(write: bool = True):
    STATE.parent.mkdir(parents=True, exist_ok=True)
    with open(STATE.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(STATE.read_text()) if STATE.exists() else json.loads(json.dumps(EMPTY))
        yield data
        if write:
            tmp = STATE.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, STATE)


def parse(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    args: list[str] = []
    opts: dict[str, str] = {}
    i = 0
    while i < len(argv):
        item = argv[i]
        if item.startswith("--"):
            if "=" in item:
                key, value = item[2:].split("=", 1)
                opts[key] = value
            elif item in FLAGS:
                opts[item[2:]] = "1"
            else:
                opts[item[2:]] = argv[i + 1]
                i += 1
        else:
            args.append(item)
        i += 1
    return args, opts


def fail(message: str, code: int = 1) -> int:
    print(message, file=sys.stderr)
    return code


def page(items: dict, opts: dict) -> dict:
    keys = sorted(items)
    offset = int(opts.get("offset", 0))
    limit = int(opts.get("limit", 500))
    return {k: items[k] for k in keys[offset : offset + limit]}


def used_bytes(uid: str) -> int:
    """Bytes under the user's ``files`` folder; SPACE_UNKNOWN when it was never made."""
    root = DATA / uid / "files"
    if not root.is_dir():
        return SPACE_UNKNOWN
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _quota_bytes(text: str) -> int:
    """The report's assigned quota: bytes, or -3 (FileInfo::SPACE_UNLIMITED) for none."""
    units = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
    number, _sep, unit = (text or "none").partition(" ")
    if not number.replace(".", "", 1).isdigit():
        return -3
    return int(float(number) * units.get(unit.upper() or "B", 1))


def usage_report(s: dict, opts: dict) -> int:
    """``occ usage-report:generate`` of all users, the app's default CSV (bytes)."""
    if "user_usage_report" not in s["apps"]:
        return fail('Command "usage-report:generate" is not defined.')
    stamp = "2026-01-01T00:00:00+00:00"
    if "verbose" in opts:
        print(
            '"user-id","date as \'c\'","assigned quota (5 GB)","used quota (500 MB)",'
            "number of files,number of shares,number of uploads,number of downloads"
        )
    for uid in sorted(s["users"]):
        root = DATA / uid / "files"
        files = sum(1 for p in root.rglob("*") if p.is_file()) if root.is_dir() else 0
        shares = sum(1 for x in s["shares"] if x["uid_owner"] == uid)
        quota = _quota_bytes(s["users"][uid].get("quota", "none"))
        print(f'"{uid}","{stamp}",{quota},{used_bytes(uid)},{files},{shares},0,0')
    return 0


def occ(argv: list[str]) -> int:
    if not argv:
        return fail("occ: no command")
    command, (args, opts) = argv[0], parse(argv[1:])
    with state() as s:
        users, groups = s["users"], s["groups"]
        if command == "user:list":
            if "info" in opts:
                listing = {
                    uid: {
                        "user_id": uid,
                        "display_name": u["display_name"],
                        "email": u.get("email", ""),
                        "enabled": u["enabled"],
                        "groups": sorted(g for g, m in groups.items() if uid in m),
                        "quota": u.get("quota", "none"),
                        "last_seen": "1970-01-01T00:00:00+00:00",
                    }
                    for uid, u in users.items()
                }
            else:
                listing = {uid: u["display_name"] for uid, u in users.items()}
            print(json.dumps(page(listing, opts)))
        elif command == "group:list":
            print(json.dumps(page({g: sorted(m) for g, m in groups.items()}, opts)))
        elif command == "user:add":
            uid = args[0]
            if uid in users:
                return fail(f'The user "{uid}" already exists.')
            if "password-from-env" in opts and not os.environ.get("OC_PASS"):
                return fail("--password-from-env given, but OC_PASS is empty!")
            (DATA / uid / "files").mkdir(parents=True, exist_ok=True)
            users[uid] = {
                "display_name": opts.get("display-name", uid),
                "email": opts.get("email", ""),
                "enabled": True,
                "quota": "none",
                "password_set": bool(os.environ.get("OC_PASS")),
            }
            if "group" in opts:
                groups.setdefault(opts["group"], [])
                groups[opts["group"]].append(uid)
            print(f'The user "{uid}" was created successfully')
        elif command == "user:setting":
            uid, app, key, *value = args
            if uid not in users:
                return fail("The user does not exist.")
            if app == "files" and key == "quota":
                users[uid]["quota"] = value[0] if value else "none"
            else:
                users[uid].setdefault("settings", {})[f"{app}.{key}"] = value[0] if value else ""
        elif command in ("user:enable", "user:disable"):
            if args[0] not in users:
                return fail("User does not exist")
            users[args[0]]["enabled"] = command == "user:enable"
        elif command == "user:delete":
            if args[0] not in users:
                return fail("User does not exist")
            del users[args[0]]
            shutil.rmtree(DATA / args[0], ignore_errors=True)
            for members in groups.values():
                if args[0] in members:
                    members.remove(args[0])
            s["shares"] = [x for x in s["shares"] if x["uid_owner"] != args[0]]
        elif command == "group:add":
            if args[0] in groups:
                return fail(f"Group {args[0]} already exists.")
            groups[args[0]] = []
            s.setdefault("group_names", {})[args[0]] = opts.get("display-name", args[0])
        elif command in ("group:adduser", "group:removeuser"):
            gid, uid = args
            if gid not in groups or uid not in users:
                return fail("group or user not found")
            if command == "group:adduser" and uid not in groups[gid]:
                groups[gid].append(uid)
            if command == "group:removeuser" and uid in groups[gid]:
                groups[gid].remove(uid)
        elif command == "config:list":
            app = args[0] if args else "all"
            apps = s["config"] if app == "all" else {app: s["config"].get(app, {})}
            print(json.dumps({"system": s["system"], "apps": apps}))
        elif command == "config:app:set":
            app, key = args
            s["config"].setdefault(app, {})[key] = opts.get("value", "")
            print(f"Config value {key} for app {app} set to {opts.get('value', '')}")
        elif command == "config:app:get":
            value = s["config"].get(args[0], {}).get(args[1])
            if value is None:
                return fail("", 1)
            print(value)
        elif command == "config:system:set":
            node = s["system"]
            for name in args[:-1]:
                node = node.setdefault(name, {})
            raw = opts.get("value", "")
            kind = opts.get("type", "string")
            node[args[-1]] = (
                raw == "true" if kind == "boolean" else int(raw) if kind == "integer" else raw
            )
        elif command == "config:system:get":
            if args[0] not in s["system"]:
                return fail("", 1)
            print(json.dumps(s["system"][args[0]]))
        elif command == "app:list":
            print(json.dumps({"enabled": dict.fromkeys(s["apps"], "1.0.0"), "disabled": {}}))
        elif command == "app:enable":
            if args[0] not in s["apps"]:
                s["apps"].append(args[0])
            print(f"{args[0]} enabled")
        elif command == "richdocuments:activate-config":
            # Nextcloud Office's command: the real one fetches discovery from wopi_url and
            # caches it; the stand-in records which settings were activated.
            office = s["config"].get("richdocuments", {})
            if "richdocuments" not in s["apps"] or not office.get("wopi_url"):
                return fail("richdocuments is not enabled or has no wopi_url")
            s["richdocuments_activated"] = {k: v for k, v in office.items() if k != "ums_activated"}
            print("Activated any config changes")
        elif command == "usage-report:generate":
            return usage_report(s, opts)
        elif command == "user:auth-tokens:add":
            uid = args[0]
            if uid not in users:
                return fail("user not found")
            token = secrets.token_urlsafe(48)
            s["tokens"].setdefault(uid, []).append({"id": s["next_id"], "token": token})
            s["next_id"] += 1
            print("app password:")
            print(token)
        elif command == "user:auth-tokens:list":
            tokens = s["tokens"].get(args[0], [])
            print(json.dumps([{"id": t["id"], "name": "cli", "type": 1} for t in tokens]))
        elif command == "user:auth-tokens:delete":
            uid, token_id = args
            s["tokens"][uid] = [t for t in s["tokens"].get(uid, []) if str(t["id"]) != token_id]
        else:
            return fail(f'Command "{command}" is not defined.')
    return 0


SHARES = "/ocs/v2.php/apps/files_sharing/api/v1/shares"
USERS = "/ocs/v1.php/cloud/users/"


def _groups_of(s: dict, uid: str) -> set[str]:
    return {g for g, members in s["groups"].items() if uid in members}


def _json_list(value: str) -> set[str]:
    try:
        return set(json.loads(value or "[]"))
    except ValueError:
        return set()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        return

    def _send(self, status: int, statuscode: int, data: object, message: str = "OK") -> None:
        body = json.dumps(
            {
                "ocs": {
                    "meta": {
                        "status": "ok" if status < 400 else "failure",
                        "statuscode": statuscode,
                        "message": message,
                    },
                    "data": data,
                }
            }
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _user(self, s: dict) -> str | None:
        if self.headers.get("OCS-APIRequest", "").lower() != "true":
            return None
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return None
        uid, _sep, password = base64.b64decode(auth[6:]).decode().partition(":")
        user = s["users"].get(uid)
        if user is None or not user["enabled"]:
            return None
        if not any(t["token"] == password for t in s["tokens"].get(uid, [])):
            return None
        return uid

    def _route(self, method: str) -> None:
        parts = urlsplit(self.path)
        v1 = parts.path.startswith("/ocs/v1.php/")
        ok = 100 if v1 else 200
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode()) if length else {}
        with state(write=method != "GET") as s:
            uid = self._user(s)
            if uid is None:
                self._send(401, 997, [], "Current user is not logged in")
                return
            if parts.path.startswith(USERS) and method == "GET":
                target = parts.path[len(USERS) :]
                user = s["users"].get(target)
                if user is None or target != uid:
                    self._send(404 if not v1 else 200, 404 if not v1 else 998, [], "not found")
                    return
                self._send(
                    200,
                    ok,
                    {
                        "id": target,
                        "enabled": user["enabled"],
                        "displayname": user["display_name"],
                        "email": user.get("email", ""),
                        "groups": sorted(_groups_of(s, target)),
                        "quota": {
                            "quota": user.get("quota", "none"),
                            "used": max(used_bytes(target), 0),
                        },
                    },
                )
            elif parts.path == SHARES and method == "GET":
                self._send(200, ok, [x for x in s["shares"] if x["uid_owner"] == uid])
            elif parts.path == SHARES and method == "POST":
                self._create(s, uid, {k: v[0] for k, v in form.items()}, ok)
            elif parts.path.startswith(SHARES + "/") and method == "DELETE":
                share_id = parts.path.rsplit("/", 1)[1]
                found = [x for x in s["shares"] if str(x["id"]) == share_id]
                if not found or found[0]["uid_owner"] != uid:
                    self._send(404, 404, [], "Wrong share ID, share does not exist")
                    return
                s["shares"].remove(found[0])
                self._send(200, ok, [])
            else:
                self._send(404, 404, [], "not found")

    def _create(self, s: dict, uid: str, form: dict, ok: int) -> None:
        core = s["config"].get("core", {})
        share_type = int(form.get("shareType", -1))
        mine = _groups_of(s, uid)
        if share_type in (3, 4):
            excluded = _json_list(core.get("shareapi_allow_links_exclude_groups", "[]"))
            if core.get("shareapi_allow_links", "yes") != "yes" or (mine and mine <= excluded):
                self._send(403, 403, [], "Public link sharing is disabled by the administrator")
                return
            exempt = _json_list(core.get("shareapi_enforce_links_password_excluded_groups", "[]"))
            enforced = core.get("shareapi_enforce_links_password", "no") == "yes"
            if enforced and not (mine & exempt) and not form.get("password"):
                self._send(403, 403, [], "Passwords are enforced for link and mail shares")
                return
        elif (
            share_type in (0, 1)
            and core.get("shareapi_exclude_groups") == "yes"
            and mine & _json_list(core.get("shareapi_exclude_groups_list", "[]"))
        ):
            self._send(403, 403, [], "Sharing is disabled for you")
            return
        share = {
            "id": str(s["next_id"]),
            "share_type": share_type,
            "uid_owner": uid,
            "displayname_owner": s["users"][uid]["display_name"],
            "path": form.get("path", "/"),
            "item_type": "file",
            "share_with": form.get("shareWith"),
            "token": secrets.token_urlsafe(10) if share_type == 3 else None,
            "expiration": form.get("expireDate"),
        }
        s["next_id"] += 1
        s["shares"].append(share)
        self._send(200, ok, share)

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")


def main(argv: list[str]) -> int:
    if argv and argv[0] == "occ":
        return occ(argv[1:])
    if argv and argv[0] == "serve":
        server = ThreadingHTTPServer((argv[1], int(argv[2])), Handler)
        server.serve_forever()
        return 0
    return fail("usage: standin.py occ <command> ... | serve <address> <port>")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
