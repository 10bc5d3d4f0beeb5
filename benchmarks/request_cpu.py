"""CPU per request of the API's read path in process, through the production WSGI handler.

Calls ``ums.wsgi.application`` directly with a WSGI environ for the root administrator's
first page of mailboxes (a real API token, the mail benchmark's 1M-mailbox database), so
every middleware, DRF, the view and the renderer run exactly as under gunicorn, without
the HTTP server. CPU is ``time.process_time`` per request (less disturbed by other load
on the machine than wall time; its p10 the least: a request that ran undisturbed); wall
p50/p95 too. ``--profile`` writes a cProfile of the
timed requests (``--profile-out``, sorted by cumulative time on stdout); ``--body`` writes
the last response body, to compare the JSON byte for byte between two trees.

Usage::

    DATABASE_URL=postgres://root@127.0.0.1:5432/ums_bench_http \\
        .venv/bin/python benchmarks/request_cpu.py [--requests 2000] [--profile]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import mail  # noqa: E402
from benchmarks.throughput import PAGE_PATH  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--path", default=PAGE_PATH)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--profile-out", type=Path, default=Path(tempfile.gettempdir()) / "ums_request_cpu.prof"
    )
    parser.add_argument("--body", type=Path, help="write the last response body here")
    return parser.parse_args(argv)


def environ_for(path: str, token: str) -> dict[str, Any]:
    path_info, _, query = path.partition("?")
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "HTTP_ACCEPT": "*/*",
        "HTTP_USER_AGENT": "wrk",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def call(application: Any, path: str, token: str) -> tuple[str, bytes]:
    status: list[str] = []

    def start_response(code: str, headers: list, exc_info: Any = None) -> None:
        status.append(code)

    result = application(environ_for(path, token), start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return status[0], body


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.pop("UMS_DEBUG", None)
    mail.setup_django()
    token = mail.ensure_people()["root"]["token"]
    from ums.wsgi import application

    for _ in range(args.warmup):
        code, body = call(application, args.path, token)
        if not code.startswith("200"):
            raise SystemExit(f"{args.path}: {code} {body[:300]!r}")
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile(time.process_time)  # CPU, not waits
        profiler.enable()
    cpu, wall = [], []
    for _ in range(args.requests):
        c0, w0 = time.process_time(), time.perf_counter()
        code, body = call(application, args.path, token)
        cpu.append((time.process_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
    if profiler is not None:
        import pstats

        profiler.disable()
        profiler.dump_stats(args.profile_out)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(60)
    if args.body:
        args.body.write_bytes(body)
    print(
        f"{args.path}: {args.requests} requests, CPU ms/request mean "
        f"{sum(cpu) / len(cpu):.3f} p10 {mail.percentile(cpu, 10):.3f} "
        f"p50 {mail.percentile(cpu, 50):.3f}; wall ms p50 "
        f"{mail.percentile(wall, 50):.3f} p95 {mail.percentile(wall, 95):.3f}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
