"""Benchmark of issue 16 part 2: rendering Radicale's files for a large cloud-files node.

Pure rendering (no database, no node): ``deploy.services.radicale`` turns a desired state
of ``--mailboxes`` mailboxes in ``--groups`` customers (each with its global address book
of its own mailboxes as vCards) into the users, rights, config and address book files a
converge compares with the node. Reports the median of ``--runs`` renders.

Usage::

    .venv/bin/python benchmarks/dav.py --mailboxes 100000 --groups 1000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from deploy.services.base import (  # noqa: E402
    DavGroupData,
    DesiredState,
    DomainData,
    MailboxData,
    NodeView,
)
from deploy.services.radicale import SERVICE  # noqa: E402

HASH = "$6$saltsalt$" + "a" * 86


def state(mailboxes: int, groups: int) -> DesiredState:
    per = max(1, mailboxes // groups)
    boxes, domains, dav_groups = [], [], []
    protocols = {"dav": True, "dav_sharing": False}
    sharing = {"dav": True, "dav_sharing": True}
    for g in range(groups):
        domain = f"org{g}.example"
        domains.append(DomainData(domain, True, "", (), None, {}))
        cards = []
        for i in range(per):
            email = f"user{i}@{domain}"
            boxes.append(
                MailboxData(email, f"user{i}", domain, HASH, 100, True, False, True, True, 0,
                            (), False, sharing if i % 10 == 0 else protocols)
            )  # fmt: skip
            cards.append(
                f"BEGIN:VCARD\r\nVERSION:4.0\r\nUID:urn:ums:person:{g}-{i}\r\n"
                f"FN:User {i}\r\nEMAIL;TYPE=work:{email}\r\nEND:VCARD\r\n"
            )
        sharers = tuple(f"user{i}@{domain}" for i in range(0, per, 10))
        dav_groups.append(DavGroupData(g + 1, f"Org {g}", (domain,), "".join(cards), sharers))
    node = NodeView(1, "files1.example", "10.0.0.5", ("cloudfiles",), "debian", 1)
    return DesiredState(node=node, domains=domains, mailboxes=boxes, dav_groups=dav_groups)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mailboxes", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    desired = state(args.mailboxes, args.groups)
    times, size = [], 0
    for _ in range(args.runs):
        started = time.perf_counter()
        files = SERVICE.render(desired)
        times.append(time.perf_counter() - started)
        size = sum(len(f.content) for f in files)
    print(
        f"radicale render: {args.mailboxes} mailboxes, {args.groups} address books, "
        f"{len(files)} files, {size / 1e6:.1f} MB: median {statistics.median(times):.3f} s "
        f"(min {min(times):.3f} s, {args.runs} runs)"
    )


if __name__ == "__main__":
    main()
