"""Benchmark of "Verify copies": reading back a domain's stream copy from a real S3 server.

``rclone serve s3`` on this machine holds one domain's stream copy (a full stream of
``--mb`` MiB, incompressible, encrypted with the backup key as a copy pass stores it);
``backup.offnode_verify.verify_streams`` downloads, decrypts and hashes it. Reported: the
time and rate, and the process's peak memory before and after the read (the read streams
1 MiB at a time, so the peak must not grow by the object's size).

Usage::

    DATABASE_URL=postgres://root@127.0.0.1:5432/ums_bench_verify \\
    .venv/bin/python benchmarks/offnode_verify.py [--mb 500]

No database access (Django is set up for the backup key); needs ``rclone``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import bootstrap  # noqa: E402

DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "offnode_verify.json"
DOMAIN = "bench.example"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(mb: int) -> dict[str, Any]:
    from backup import drivers, offnode, offnode_verify
    from backup.drivers.s3 import S3Target
    from tests.backup.servers import rclone_s3

    block = os.urandom(1024 * 1024)
    digest = hashlib.sha256()
    for _ in range(mb):
        digest.update(block)
    with tempfile.TemporaryDirectory() as root, rclone_s3(Path(root)) as server:
        (Path(root) / "backups").mkdir()
        where = {"endpoint_url": server.url, "region": "", "bucket": "backups", "prefix": "b"}
        keys = {"access_key": server.access_key, "secret_key": server.secret_key}
        driver = S3Target(**where, **keys, server_side_encryption=False)
        name = f"{offnode.PREFIX}/{DOMAIN}/c1/00000-ums-manual-0.zfs"
        drivers.put_encrypted(driver, name, (block for _ in range(mb)))
        entry = {"name": name, "sha256": digest.hexdigest(), "bytes": mb * len(block)}
        manifest = {"version": 1, "domain": DOMAIN, "chains": [{"id": "c1", "objects": [entry]}]}
        offnode._write_manifest(driver, manifest)
        before = _peak_mb()
        stats: dict[str, int] = {}
        started = time.perf_counter()
        errors = offnode_verify.verify_streams(driver, DOMAIN, stats)
        seconds = time.perf_counter() - started
        driver.close()
    return {
        "object_mib": mb,
        "verify_seconds": round(seconds, 2),
        "verify_mib_per_s": round(mb / seconds, 1),
        "peak_rss_mib_before": round(before, 1),
        "peak_rss_mib_after": round(_peak_mb(), 1),
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    bootstrap.database_url()
    bootstrap.setup_django()
    figures = run(args.mb)
    bootstrap.write_figures("offnode_verify", figures, args.json)
    return 0 if not figures["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
