"""Benchmark of issue 16 part 1: what a webmail node costs per converge and per login.

No database: a hand-built desired state of N mailboxes (default 100,000) in 1,000 domains,
each domain's customer with an address book of its 100 mailboxes. Times:

* ``RoundcubeService.render`` (allow list, domain map, address books, configuration);
* the plugin's login-time checks, run by PHP on the rendered files: the allow-list scan
  for the last address (the worst case, a linear read of the file) and the domain map
  lookup (``webmail.json`` decoded), each the median of 20 PHP runs.

Usage::

    .venv/bin/python benchmarks/webmail.py [--mailboxes 100000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from deploy.services.base import (  # noqa: E402
    DesiredState,
    DomainData,
    MailboxData,
    NodeView,
    WebmailData,
    WebmailDomain,
)
from deploy.services.roundcube import SERVICE  # noqa: E402

# The plugin's own methods, with a stand-in base class (Roundcube is not loaded).
PHP = r"""<?php
class rcube_plugin {}
require $argv[1];
$plugin = (new ReflectionClass('ums'))->newInstanceWithoutConstructor();
$dir = new ReflectionProperty('ums', 'dir');
$dir->setAccessible(true);
$dir->setValue($plugin, $argv[2]);
$allowed = new ReflectionMethod('ums', 'allowed');
$allowed->setAccessible(true);
$info = new ReflectionMethod('ums', 'domain_info');
$info->setAccessible(true);
$t = hrtime(true);
$ok = $allowed->invoke($plugin, $argv[3]);
$scan = (hrtime(true) - $t) / 1e6;
$t = hrtime(true);
$found = $info->invoke($plugin, $argv[4]);
$map = (hrtime(true) - $t) / 1e6;
echo json_encode(['ok' => $ok && $found !== null, 'scan_ms' => $scan, 'map_ms' => $map]);
"""


def state(mailboxes: int, domains: int = 1000) -> DesiredState:
    per = max(1, mailboxes // domains)
    s = DesiredState(
        node=NodeView(1, "web1.bench.test", "10.0.0.2", ("webmail",), "debian", 1),
        nodes_by_role={"smtp": [("mx1", "10.0.0.3")]},
        webmail=WebmailData("Bench Mail", "B" * 24),
    )
    assert s.webmail is not None
    protocols = {"webmail": True}
    for d in range(domains):
        name = f"d{d:04d}.bench.test"
        s.domains.append(DomainData(name, True, "", (), None, {}, node_address="10.0.1.2"))
        s.webmail.domains.append(WebmailDomain(name, "", d))
        book = []
        for m in range(per):
            email = f"user{m:05d}@{name}"
            s.mailboxes.append(
                MailboxData(email, f"user{m:05d}", name, "$6$x$y", 100, True, False, True,
                            True, 0, (), True, protocols)
            )  # fmt: skip
            book.append({"id": f"p{d}-{m}", "kind": "person", "email": email, "name": ""})
        s.webmail.books[d] = book
    return s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mailboxes", type=int, default=100_000)
    args = parser.parse_args()
    s = state(args.mailboxes)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        files = SERVICE.render(s)
        times.append(time.perf_counter() - start)
    by_path = {f.path: f.content for f in files}
    allowed = by_path["/etc/roundcube/ums/allowed.txt"]
    with tempfile.TemporaryDirectory() as folder:
        for name in ("allowed.txt", "webmail.json"):
            Path(folder, name).write_bytes(by_path[f"/etc/roundcube/ums/{name}"])
        script = Path(folder, "bench.php")
        script.write_text(PHP)
        last = allowed.decode().split()[-1]
        plugin = REPO_ROOT / "deploy/services/roundcube/plugin/ums.php"
        runs = []
        for _ in range(20):
            out = subprocess.run(
                ["php", str(script), str(plugin), folder, last, last.split("@")[1]],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            runs.append(json.loads(out.stdout))
    assert all(r["ok"] for r in runs)
    print(f"mailboxes: {len(s.mailboxes)}, files: {len(files)}, "
          f"allow list {len(allowed) / 1e6:.1f} MB")  # fmt: skip
    print(f"render: best {min(times):.2f} s of 3")
    print(f"login allow-list scan (last address): median "
          f"{statistics.median(r['scan_ms'] for r in runs):.1f} ms")  # fmt: skip
    print(f"login domain lookup (webmail.json): median "
          f"{statistics.median(r['map_ms'] for r in runs):.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
