"""How long the Nextcloud plan takes at scale (pure: no node, no database).

``python benchmarks/nextcloud_plan.py --accounts 100000`` builds the desired state of
that many accounts in 1,000 customer groups and times :func:`deploy.services.nextcloud.occ.plan`
against an empty instance (everything to create) and against a converged one (nothing to
do: what every converge after a mail change pays besides reading the facts).
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

from deploy.services.nextcloud import occ  # noqa: E402
from deploy.services.nextcloud.data import Account, GroupPolicy, NextcloudData  # noqa: E402


def build(accounts: int, groups: int) -> tuple[NextcloudData, occ.Facts]:
    data = NextcloudData(
        [
            Account(f"user{i}@d{i % groups}.example", f"User {i}", f"ums-c{i % groups}", 1024,
                    True, True)
            for i in range(accounts)
        ],
        [GroupPolicy(f"ums-c{g}", f"Customer {g}", True, g % 2 == 0, False, 0)
         for g in range(groups)],
    )  # fmt: skip
    facts = occ.Facts()
    for a in data.accounts:
        facts.users[a.uid] = {"enabled": True, "quota": "1024 MB"}
        facts.groups.setdefault(a.group, []).append(a.uid)
    facts.config = {"core": occ.share_config(data)}
    facts.enabled_apps = {"core"}
    return data, facts


def timed(func, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    data, facts = build(args.accounts, args.groups)
    config = {"core": occ.share_config(data)}

    def plan(with_facts: occ.Facts) -> occ.Plan:
        return occ.plan(with_facts, data, app_config=config, apps=["core"], objectstore=None)

    converged = timed(lambda: plan(facts), args.runs)
    fresh = timed(lambda: plan(occ.Facts()), args.runs)
    assert plan(facts).commands == []
    print(f"accounts={args.accounts} groups={args.groups}")
    print(f"plan, converged instance: {converged * 1000:.0f} ms (median of {args.runs})")
    print(f"plan, empty instance:     {fresh * 1000:.0f} ms (median of {args.runs})")


if __name__ == "__main__":
    main()
