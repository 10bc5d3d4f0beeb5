"""Record the API's answers through the production WSGI handler, to compare two trees.

A speed change of the read path must not change a byte: this calls ``ums.wsgi.application``
(every middleware, DRF, the renderers) for the lists, a second page by cursor, a bad
cursor and the API root, as the mail benchmark's root and mid administrators, without a
token and with a wrong one, in English and Russian, plus three portal pages, and writes
status, headers (less the per-request ``X-Request-ID``, ``Expires`` and cookie values)
and bodies as JSON. Run it from each tree on the same database and compare the files
with ``--compare``; the audit list is left out there (its rows are the runs' own records).

Usage::

    cd <tree> && DATABASE_URL=postgres://root@127.0.0.1:5432/ums_bench_http \\
        .venv/bin/python benchmarks/compare_responses.py /tmp/before.json
    .venv/bin/python benchmarks/compare_responses.py --compare /tmp/before.json /tmp/after.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import mail  # noqa: E402
from benchmarks.request_cpu import environ_for  # noqa: E402

API_PATHS = [
    "/api/v1/mail/mailboxes/?pageSize=50",
    "/api/v1/mail/mailboxes/",
    "/api/v1/mail/mailboxes/?page_size=3",
    "/api/v1/mail/mailboxes/?pageSize=5&search=anna",
    "/api/v1/mail/domains/?pageSize=5",
    "/api/v1/customers/?pageSize=5",
    "/api/v1/mail/aliases/?pageSize=5",
    "/api/v1/audit/?pageSize=5",
    "/api/v1/",
    "/api/v1/mail/mailboxes/?cursor=bad",
]
PORTAL_PATHS = ["/", "/login/", "/static/nonexistent.css"]
VOLATILE = {"Expires", "Set-Cookie"}


def answer(application: Any, path: str, token: str | None, extra: dict[str, str]) -> list:
    environ = environ_for(path, token or "")
    if token is None:
        del environ["HTTP_AUTHORIZATION"]
    environ.update(extra)
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list, exc_info: Any = None) -> None:
        seen["status"] = status
        seen["headers"] = [
            [k, "*" if k in VOLATILE else v] for k, v in headers if k != "X-Request-ID"
        ]

    body = b"".join(application(environ, start_response)).decode()
    if "csrfmiddlewaretoken" in body:  # a fresh CSRF token in every form
        body = f"(page with a form, {len(body)} characters)"
    return [seen["status"], seen["headers"], body]


def record(out: Path) -> int:
    os.environ.pop("UMS_DEBUG", None)
    mail.setup_django()
    people = mail.ensure_people()
    from ums.wsgi import application

    callers = {
        "root": people["root"]["token"],
        "mid": people["mid"]["token"],
        "none": None,
        "wrong": "ums_000000000000_wrong",
    }
    rows = []
    for path in API_PATHS:
        for who, token in callers.items():
            for language in ("", "ru"):
                extra = {"HTTP_ACCEPT_LANGUAGE": language} if language else {}
                rows.append([path, who, language, *answer(application, path, token, extra)])
    first = answer(application, "/api/v1/mail/mailboxes/?pageSize=5", callers["root"], {})
    second = "/" + json.loads(first[2])["next"].split("/", 3)[3]
    rows.append([second, "root", "", *answer(application, second, callers["root"], {})])
    for path in PORTAL_PATHS:
        rows.append([path, "none", "", *answer(application, path, None, {})])
    out.write_text(json.dumps(rows, indent=1))
    print(f"wrote {len(rows)} answers to {out}")
    return 0


def compare(before: Path, after: Path) -> int:
    old, new = json.loads(before.read_text()), json.loads(after.read_text())
    differ = [
        (a[0], a[1], a[2])
        for a, b in zip(old, new, strict=True)
        if not a[0].startswith("/api/v1/audit/") and a != b
    ]
    for path, who, language in differ:
        print(f"differs: {path} as {who} {language}")
    print(f"{len(old)} answers, {len(differ)} differ (the audit list not compared)")
    return 1 if differ else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--compare", action="store_true", help="compare two recorded files")
    args = parser.parse_args(argv)
    if args.compare:
        return compare(*args.files[:2])
    return record(args.files[0])


if __name__ == "__main__":
    sys.exit(main())
