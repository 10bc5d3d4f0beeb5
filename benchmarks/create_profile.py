"""Profile of one client's mailbox creates (issue 19): SQL statements and CPU per create.

Runs ``mail.actions.create_mailbox`` in one domain of a child of the root on the mail
benchmark's database (as ``benchmarks/concurrent_writes.py`` does), after a few untimed
creates so that the customer holds escrow. Prints the statements of one create, the
statement kinds per create over ``--creates`` creates, the process CPU per create without
a profiler, and with ``--cprofile`` the functions that cost most. Run it beside
``concurrent_writes.py`` (``--domain-index 16``: a customer the benchmark does not use) to
see the same create under load.

Usage::

    DATABASE_URL=postgres://root@127.0.0.1:5432/ums_bench_writes \\
        .venv/bin/python benchmarks/create_profile.py [--creates 150] [--cprofile]
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import concurrent_writes, mail  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--creates", type=int, default=150)
    parser.add_argument("--domain-index", type=int, default=0)
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args(argv)
    mail.database_url()
    mail.setup_django()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from mail import actions
    from mail.models import Domain
    from tenants.models import Administrator
    from ums import context

    actor = Administrator.objects.get(username="bench.root")
    domain_id = concurrent_writes.domains_under_root(args.domain_index + 1)[args.domain_index]
    domain = Domain.objects.get(pk=domain_id)

    def create(tag: str) -> None:
        with context.acting(channel=context.CHANNEL_CLI, actor=actor):
            actions.create_mailbox(
                actor=actor, domain=domain, local_part=f"pf{os.getpid()}x{time.time_ns()}{tag}",
                password="bench-Password-not-secret-1",
            )  # fmt: skip

    for n in range(5):
        create(f"w{n}")
    with CaptureQueriesContext(connection) as one:
        create("one")
    print(f"{len(one.captured_queries)} SQL statements in one create (escrow held):")
    for query in one.captured_queries:
        print("   ", query["sql"][:120])
    kinds: collections.Counter[str] = collections.Counter()
    with CaptureQueriesContext(connection) as many:
        for n in range(args.creates):
            create(f"q{n}")
    for query in many.captured_queries:
        words = query["sql"].split()
        kinds[" ".join(words[:2]) if words[0] in {"SELECT", "UPDATE", "INSERT"} else words[0]] += 1
    print(f"\nstatements per create over {args.creates} creates:")
    for kind, count in kinds.most_common(25):
        print(f"  {count / args.creates:5.2f} {kind[:70]}")
    started_cpu, started = time.process_time(), time.perf_counter()
    for n in range(args.creates):
        create(f"t{n}")
    cpu = (time.process_time() - started_cpu) * 1000 / args.creates
    wall = (time.perf_counter() - started) * 1000 / args.creates
    print(
        f"\nCPU {cpu:.2f} ms per create, wall {wall:.2f} ms (no profiler), "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    if args.cprofile:
        profile = cProfile.Profile(time.process_time)
        profile.enable()
        for n in range(args.creates):
            create(f"p{n}")
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
