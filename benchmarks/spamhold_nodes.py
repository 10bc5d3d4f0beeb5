"""Benchmark of issue 6, node side: held mail on a real Postfix SMTP node.

Measured on one real SMTP node of the test harness (tests/harness: sshd in its own
network and mount namespaces, Postfix converged by the real ``node.converge`` job):

1. **Ingesting ``--messages`` (10,000) held messages** from the node's hold queue into the
   database with :func:`spamhold.ingest.ingest_node`; then a second run, which finds
   nothing new (idempotent) and must say so.
2. **Releasing them all** through :func:`spamhold.actions.release` as an administrator
   (the durable request and its claim, then its job in process: batched ``postsuper -r``
   with our marker, the pickup kick, the settle per batch): **target < 10 s**.
   Afterwards the hold queue must be empty and every row ``RELEASED``, else the
   benchmark fails (exit 1).
3. **Deleting** another ``--messages`` through :func:`spamhold.actions.delete` (same
   shape, same checks, rows ``DELETED`` and the messages in no queue at all).

How mail gets on hold: inside the node, ``sendmail`` (postdrop, pickup, cleanup: no SMTP)
with the ``X-UMS-Hold: spam; score=9.5; rules=TEST_RULE`` header the content filter adds,
while a ``header_checks`` rule ``/^X-UMS-Hold:/ HOLD`` replaces the converged one (which
strips that header from incoming mail) so cleanup itself files each message in the hold
queue. The original ``main.cf`` is restored before anything is timed. This plays the
filter's part only; everything timed acts on the node's real hold queue over SSH.

Deliveries after a release are *not* part of the timing. The released mail is relayed
to the IMAP node of the hosted domain, a node row whose address has no Postfix listening
(connection refused), so Postfix defers it instead of delivering 10,000 messages into a
Maildir; the benchmark deletes the whole queue (``postsuper -d ALL``) at the end.

Every timed run is broken down (exclusive, in this process): SSH connection set-up, each
remote command (round trip plus the node's work, e.g. ``postsuper``), SQL (wall time of
every query, through ``connection.execute_wrapper``) and the rest (Python on the
controller). ``--profile`` adds a cProfile of each timed run.

Usage::

    DATABASE_URL=postgres://root@127.0.0.1:5432/ums_bench_spamhold_nodes \\
        .venv/bin/python benchmarks/spamhold_nodes.py

Needs root (network namespaces, bind mounts) and the ``postfix`` package on this machine
(the nodes share its /usr). The database name must contain "bench": the benchmark deletes
every node, job and held message in it.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import io
import json
import logging
import os
import platform
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import bootstrap  # noqa: E402

DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "spamhold_nodes.json"
RELEASE_TARGET_S = 10.0
MAILLOG = "/var/spool/postfix/maillog"
QUEUE_DIR = "/var/spool/postfix"
HOLD_HEADER = "spam; score=9.5; rules=TEST_RULE"
DOMAIN = "hold-bench.example"
MAILBOXES = 20
PASSWORD = "Bench-Hold-Password-1"
# Inside the node: header_checks that files X-UMS-Hold mail in the hold queue.
HOLD_CHECKS = "/etc/postfix/bench_hold_checks"
INJECT_SCRIPT = "/root/bench-inject.sh"
# Injects messages $2, $2+$3, ... below $1 with sendmail; body from the file $4.
INJECT = r"""#!/bin/sh
n=$1; i=$2; step=$3; body=$4
while [ "$i" -lt "$n" ]; do
  s="bulk$((i % 97))@sender$((i % 13)).test"
  r="user$((i % {mailboxes}))@{domain}"
  {{ printf 'From: Bulk Sender %d <%s>\nTo: <%s>\nSubject: bench held message %d\n' \
      "$i" "$s" "$r" "$i"
    printf 'Message-ID: <bench-hold-%d@sender.test>\nX-UMS-Hold: {header}\n' "$i"
    printf 'MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n'
    cat "$body"
  }} | /usr/sbin/sendmail -i -f "$s" -- "$r" || exit 1
  i=$((i + step))
done
"""
BODY = ("Dear customer, this is a bulk offer you did not ask for. " * 2 + "\n") * 24


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--no-delete", action="store_true", help="skip part 3 (delete)")
    parser.add_argument("--profile", action="store_true", help="cProfile every timed run")
    parser.add_argument("--inject-parallel", type=int, default=4, help="sendmail loops at once")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------ setup


def configure() -> None:
    """Only Postfix and Courier converge (as tests/converge/conftest.py has it).

    The other services (SpamAssassin, ClamAV, ZFS, nginx) have their own benchmarks and
    would install packages on the nodes, which share this machine's /usr. Changes made
    while seeding must not start converge jobs: the benchmark runs the one it needs.
    """
    from django.conf import settings

    from deploy.services import registry
    from deploy.services.courier import SERVICE as COURIER
    from deploy.services.postfix import SERVICE as POSTFIX

    registry.SERVICES[:] = [COURIER, POSTFIX]
    settings.UMS_CONVERGE = {"postfix_maillog_file": MAILLOG}
    settings.UMS_AUTO_CONVERGE = False
    settings.UMS_CONVERGE_ON_APPROVAL = False


def reset() -> tuple[Any, Any]:
    """Forget nodes, jobs and held mail of an earlier run; the tenants to use.

    Returns (the zone, the administrator that releases). The provider, a customer with
    the hosted domain and its mailboxes are created once and kept between runs.
    """
    from deploy import controller_keys
    from mail import actions as mail_actions
    from mail.models import Domain
    from servers.models import MetricSample, Node, NodeAlert, Zone
    from spamhold.models import HeldMessage
    from tenants import actions as tenant_actions
    from tenants import permissions as perms
    from tenants.models import Administrator, Customer
    from ums.models import Job

    for model in (HeldMessage, MetricSample, NodeAlert, Job, Node, Zone):
        model.objects.all().delete()
    controller_keys.current()
    root = Customer.objects.filter(name="Bench Provider", parent=None).first()
    if root is None:
        root = tenant_actions.create_customer(actor=None, name="Bench Provider", parent=None)
    customer = Customer.objects.filter(name="Bench Hold Customer", parent=root).first()
    if customer is None:
        customer = tenant_actions.create_customer(
            actor=None, name="Bench Hold Customer", parent=root
        )
    domain = Domain.objects.filter(name=DOMAIN).first()
    if domain is None:
        domain = mail_actions.create_domain(
            actor=None, customer=customer, name=DOMAIN, contact_email="postmaster@provider.example"
        )
    have = set(domain.mailboxes.values_list("local_part", flat=True))
    for i in range(MAILBOXES):
        if f"user{i}" not in have:
            mail_actions.create_mailbox(
                actor=None, domain=domain, local_part=f"user{i}", password=PASSWORD
            )
    admin = Administrator.objects.filter(username="bench.hold").first()
    if admin is None:
        admin = tenant_actions.create_administrator(
            actor=None,
            customer=root,
            username="bench.hold",
            full_name="Bench Hold",
            email="bench.hold@provider.example",
            password=PASSWORD,
            permissions=list(perms.ALL),
        )
    zone = Zone.objects.create(customer=root, customer_path=root.path, name="Bench Hold DC")
    return zone, admin


def start_cluster(base: Path) -> Any:
    """Two harness nodes: the SMTP node and the (silent) IMAP node it relays to."""
    from deploy import controller_keys
    from deploy.connector.keys import public_key_openssh
    from tests.harness.sshnodes import NodeCluster
    from tests.servers.nodes import PRIVATE_PATHS, install_stand_ins

    pkey = controller_keys.private_key(controller_keys.current())
    cluster = NodeCluster(
        base,
        2,
        public_key_openssh(pkey, "bench"),
        private_paths=(*PRIVATE_PATHS, "/var/lib/postfix", "/run/courier", "/var/lib/courier"),
    )
    cluster.start()
    if cluster.mode != "netns" or not cluster.isolated:
        cluster.stop()
        raise SystemExit("bench: mail nodes need network and mount namespaces (port 25)")
    for tnode in cluster.nodes:
        install_stand_ins(tnode)
    return cluster


def node_row(zone: Any, tnode: Any, role: str) -> Any:
    """An approved, verified node serving the whole tree (as after enrolment)."""
    from deploy import controller_keys, dirty
    from servers.choices import NodeStatus
    from servers.models import Node

    node = Node.objects.create(
        customer=zone.customer,
        customer_path=zone.customer_path,
        zone=zone,
        hostname=tnode.hostname,
        addresses=[tnode.address],
        ssh_address=tnode.address,
        ssh_port=tnode.port,
        reported_host_keys=[tnode.host_key],
        pinned_host_keys=[tnode.host_key],
        roles=[role],
        status=NodeStatus.ACTIVE,
        os_id="debian",
        controller_key_version=controller_keys.current().version,
    )
    dirty.forget([node.pk])
    return node


def converge(node: Any) -> float:
    """Run one converge job in this process exactly as a worker would; its seconds."""
    from ums import jobs
    from ums.models import Job

    started = time.perf_counter()
    job = Job.objects.create(
        kind="node.converge",
        title=f"Converge {node.hostname}",
        customer_path=node.customer_path,
        requested_by_name="system",
        object_type="servers.node",
        object_id=str(node.pk),
        params={"node_id": node.pk, "dry_run": False, "reason": "bench"},
    )
    jobs.load_handlers()
    status = jobs.run(job.pk)
    job.refresh_from_db()
    if status != Job.SUCCEEDED:
        raise SystemExit(f"bench: converge of {node.hostname} {status}: {job.error[-3000:]}")
    return time.perf_counter() - started


# --------------------------------------------------------------------- the node's queue


def queue_files(tnode: Any, queue: str) -> int:
    """Messages in one of the node's queues (files under hashed or flat folders)."""
    root = tnode.path(f"{QUEUE_DIR}/{queue}")
    if not root.is_dir():
        return 0
    return sum(len(files) for _dir, _subdirs, files in os.walk(root))


def all_queues(tnode: Any) -> dict[str, int]:
    return {
        q: queue_files(tnode, q) for q in ("maildrop", "incoming", "active", "deferred", "hold")
    }


def postfix(tnode: Any, *args: str) -> None:
    # Without a tty or syslog Postfix fails silently: script(1) gives it a terminal.
    tnode.exec_in_node(["script", "-qec", " ".join(["postfix", *args]), "/dev/null"])


def put_on_hold(tnode: Any, count: int, parallel: int) -> dict[str, Any]:
    """``count`` new messages in the node's hold queue, injected with sendmail.

    Cleanup files them in the hold queue itself (a HOLD header check) while the injection
    runs; the node's own main.cf is restored (and Postfix reloaded) before returning.
    """
    before = queue_files(tnode, "hold")
    main_cf = tnode.path("/etc/postfix/main.cf")
    original = main_cf.read_bytes()
    tnode.path(HOLD_CHECKS).write_text("/^X-UMS-Hold:/ HOLD\n")
    script = tnode.path(INJECT_SCRIPT)
    script.write_text(INJECT.format(mailboxes=MAILBOXES, domain=DOMAIN, header=HOLD_HEADER))
    tnode.path("/root/bench-body.txt").write_text(BODY)
    started = time.perf_counter()
    tnode.exec_in_node(
        [
            "postconf",
            "-e",
            f"header_checks = regexp:{HOLD_CHECKS}",
            "non_smtpd_milters =",
            # pickup + cleanup as fast as the disk allows: one cleanup per message
            # would otherwise be capped by the default process limit of 100 (fine).
        ]
    )
    postfix(tnode, "reload")
    try:
        tnode.exec_in_node(
            [
                "sh",
                "-c",
                'for k in $(seq 0 $(($3 - 1))); do sh "$1" "$2" "$k" "$3" "$4" & done; wait',
                "sh",
                INJECT_SCRIPT,
                str(count),
                str(parallel),
                "/root/bench-body.txt",
            ],
            timeout=1800,
        )
        deadline = time.monotonic() + 600
        while True:
            queues = all_queues(tnode)
            if queues["hold"] - before >= count and queues["maildrop"] + queues["incoming"] == 0:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: messages did not reach the hold queue: {queues}")
            time.sleep(0.5)
    finally:
        main_cf.write_bytes(original)
        postfix(tnode, "reload")
    queues = all_queues(tnode)
    if queues["hold"] - before != count:
        raise SystemExit(f"bench: expected {count} new held messages, queues are {queues}")
    return {"messages": count, "seconds": round(time.perf_counter() - started, 1)}


def purge_queue(tnode: Any, timeout: float = 120) -> None:
    """Delete everything queued on the node; repeated until the queue manager is done
    with what it had in hand (mail it held in memory can come back to the deferred queue)."""
    deadline = time.monotonic() + timeout
    while True:
        tnode.exec_in_node(["postsuper", "-d", "ALL"], check=False, timeout=600)
        time.sleep(1)
        if not sum(all_queues(tnode).values()) or time.monotonic() > deadline:
            return


def queued_ids(tnode: Any) -> set[str]:
    """Every queue id on the node, whatever the queue (postqueue -j)."""
    out = tnode.exec_in_node(["postqueue", "-j"], timeout=600).stdout
    return {json.loads(line)["queue_id"] for line in out.splitlines() if line.strip()}


# ----------------------------------------------------------------------- instrumentation


class Breakdown:
    """Exclusive wall time of a run: SSH connects, remote commands, SQL, the rest.

    The categories never overlap: the code under test runs in one thread and does no SQL
    while it waits for a remote command, nor the other way round.
    """

    def __init__(self) -> None:
        self.connects = [0, 0.0]
        self.commands: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        self.sql = [0, 0.0]
        self.phases: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])

    def as_dict(self, wall: float) -> dict[str, Any]:
        ssh = self.connects[1] + sum(s for _n, s in self.commands.values())
        return {
            "wall_s": round(wall, 3),
            "ssh_connects": {"count": self.connects[0], "s": round(self.connects[1], 3)},
            "remote_commands": {
                label: {"count": n, "s": round(s, 3)}
                for label, (n, s) in sorted(self.commands.items(), key=lambda kv: -kv[1][1])
            },
            "remote_commands_total": {
                "count": sum(n for n, _s in self.commands.values()),
                "s": round(ssh - self.connects[1], 3),
            },
            "sql": {"queries": self.sql[0], "s": round(self.sql[1], 3)},
            "controller_python_s": round(wall - ssh - self.sql[1], 3),
            "phases_inclusive": {
                name: {"calls": n, "s": round(s, 3)} for name, (n, s) in self.phases.items()
            },
        }


def _label(argv: list[str]) -> str:
    """A short name for a remote command: the program, or the sh -c script's purpose."""
    from spamhold import nodeops

    if argv[:2] == ["sh", "-c"] and len(argv) > 2:
        scripts = {
            nodeops.HEADERS_SCRIPT: "sh: postcat -hq per id (headers)",
            getattr(
                nodeops, "BATCH_HEADERS_SCRIPT", None
            ): "sh: postcat -ehq batch | awk (headers)",
            nodeops.IN_HOLD_SCRIPT: "sh: test -f per id (in hold?)",
        }
        return scripts.get(argv[2], "sh -c " + argv[2][:40])
    return " ".join(a for a in argv[:3] if not a.startswith("/")) or argv[0]


@contextlib.contextmanager
def instrumented(breakdown: Breakdown) -> Iterator[None]:
    """Time SSH and SQL without changing behaviour: wrappers restored on exit."""
    from django.db import connection

    from deploy.connector.ssh import SSHConnector
    from spamhold import actions, ingest, nodeops

    originals: list[tuple[Any, str, Any]] = []

    def wrap(owner: Any, attr: str, on_done: Callable[[Any, float], None]) -> None:
        original = getattr(owner, attr)
        originals.append((owner, attr, original))

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                on_done(args, time.perf_counter() - started)

        setattr(owner, attr, wrapper)

    def add(bucket: list[float], seconds: float) -> None:
        bucket[0] += 1
        bucket[1] += seconds

    wrap(SSHConnector, "_connect_once", lambda _a, s: add(breakdown.connects, s))
    wrap(SSHConnector, "run", lambda a, s: add(breakdown.commands[_label(a[1])], s))
    for owner, name in (
        (nodeops, "list_hold"),
        (nodeops, "fetch_headers"),
        (nodeops, "in_hold"),
        (nodeops, "release"),
        (nodeops, "delete"),
        (ingest, "_build_rows"),
        (actions, "record_ingest"),
        (actions, "_claim"),
        (actions, "_run_on_nodes"),
        (actions, "_settle"),
        (actions, "_audit"),
    ):
        wrap(owner, name, lambda _a, s, n=f"{owner.__name__}.{name}": add(breakdown.phases[n], s))

    def sql_timer(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            add(breakdown.sql, time.perf_counter() - started)

    try:
        with connection.execute_wrapper(sql_timer):
            yield
    finally:
        for owner, attr, original in reversed(originals):
            setattr(owner, attr, original)


def timed(
    label: str, func: Callable[[], Any], profile: bool
) -> tuple[Any, dict[str, Any], list[str]]:
    """Run ``func`` once, instrumented (and profiled if asked); its result and breakdown."""
    breakdown = Breakdown()
    profiler = cProfile.Profile() if profile else None
    load = os.getloadavg()
    with instrumented(breakdown):
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        try:
            result = func()
        finally:
            if profiler:
                profiler.disable()
        wall = time.perf_counter() - started
    data = breakdown.as_dict(wall)
    data["loadavg_before"] = [round(x, 2) for x in load]
    data["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    top: list[str] = []
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
        top = out.getvalue().splitlines()
    print(f"   {label}: {wall:.2f} s", flush=True)
    return result, data, top


def ssh_round_trip(node: Any, runs: int = 30) -> dict[str, float]:
    """Cost of one no-op remote command on an open connection, and of a connection."""
    from deploy.nodes import session

    started = time.perf_counter()
    with session(node) as conn:
        connect = time.perf_counter() - started
        samples = []
        for _ in range(runs):
            t = time.perf_counter()
            conn.run(["true"])
            samples.append(time.perf_counter() - t)
    samples.sort()
    return {
        "connect_s": round(connect, 4),
        "true_p50_ms": round(samples[len(samples) // 2] * 1000, 2),
        "true_min_ms": round(samples[0] * 1000, 2),
    }


# ------------------------------------------------------------------------------ checks


class Failed(SystemExit):
    """A correctness check failed: the figures would be meaningless."""

    def __init__(self, message: str) -> None:
        super().__init__(f"bench: FAILED: {message}")


def check_ingest(result: Any, count: int, *, new: int) -> None:
    from spamhold.models import HeldMessage, Reason, Status

    if result.error or result.in_queue != count or result.new != new or result.gone:
        raise Failed(f"ingest: {result.as_dict()} (expected {count} in queue, {new} new)")
    rows = HeldMessage.objects.filter(status=Status.ONHOLD)
    if rows.count() != count or rows.exclude(reason=Reason.SPAM).exists():
        raise Failed(f"ingest: {rows.count()} ONHOLD rows, not {count} spam rows")
    owned = rows.filter(customer__name="Bench Hold Customer").count()
    if owned != count:
        raise Failed(f"ingest: {owned} of {count} rows belong to the domain's customer")


def check_outcome(report: Any, tnode: Any, ids: list[int], status: str) -> dict[str, Any]:
    from django.db.models import Count

    from spamhold.models import HeldMessage

    counts = report.counts()
    statuses = dict(
        HeldMessage.objects.filter(pk__in=ids)
        .order_by()
        .values_list("status")
        .annotate(n=Count("pk"))
    )
    queues = all_queues(tnode)
    problems = []
    # The action answers with the request (every id pending); in process, its job ran at
    # commit, so the rows below must already say what the node confirmed.
    if counts.get("pending") != len(ids) or report.failed or report.already or report.not_found:
        problems.append(f"report {counts}, failed {report.failed[:3]}")
    if statuses != {status: len(ids)}:
        problems.append(f"row statuses {statuses}, expected all {status}")
    if queues["hold"]:
        problems.append(f"{queues['hold']} messages still in the hold queue")
    if problems:
        raise Failed("; ".join(problems))
    return {"report": counts, "rows": statuses, "queues_after": queues}


# -------------------------------------------------------------------------------- run


def run_ingest(args: argparse.Namespace, node: Any, tnode: Any) -> dict[str, Any]:
    from spamhold import ingest

    result, first, prof1 = timed("ingest (new)", lambda: ingest.ingest_node(node), args.profile)
    check_ingest(result, args.messages, new=args.messages)
    again, second, prof2 = timed(
        "ingest (nothing new)", lambda: ingest.ingest_node(node), args.profile
    )
    check_ingest(again, args.messages, new=0)
    out = {"first": first, "second": second}
    if args.profile:
        out["profile_first"] = prof1
        out["profile_second"] = prof2
    return out


def run_outcome(
    args: argparse.Namespace, verb: str, admin: Any, tnode: Any, status: str
) -> dict[str, Any]:
    from spamhold import actions
    from spamhold.models import HeldMessage, Status

    ids = list(
        HeldMessage.objects.filter(status=Status.ONHOLD).order_by("pk").values_list("pk", flat=True)
    )
    if len(ids) != args.messages:
        raise Failed(f"{verb}: {len(ids)} rows on hold, expected {args.messages}")
    func = actions.release if verb == "release" else actions.delete
    report, data, prof = timed(
        f"{verb} {len(ids)}", lambda: func(actor=admin, ids=ids), args.profile
    )
    data["checks"] = check_outcome(report, tnode, ids, status)
    if verb == "delete":
        queue_ids = set(HeldMessage.objects.filter(pk__in=ids).values_list("queue_id", flat=True))
        left = queue_ids & queued_ids(tnode)
        if left:
            raise Failed(f"delete: {len(left)} deleted messages still queued on the node")
    if args.profile:
        data["profile"] = prof
    data["messages"] = len(ids)
    return data


def print_breakdown(title: str, data: dict[str, Any]) -> None:
    print(f"\n{title}: {data['wall_s']} s (load {data['loadavg_before'][0]})")
    connects = data["ssh_connects"]
    rows = [("ssh connections opened", connects["count"], connects["s"])]
    rows += [(label, item["count"], item["s"]) for label, item in data["remote_commands"].items()]
    rows += [("sql queries", data["sql"]["queries"], data["sql"]["s"])]
    rows += [("controller python (the rest)", "", data["controller_python_s"])]
    for label, count, seconds in rows:
        print(f"   {label[:38]:38} {count!s:>6} {seconds:>8.3f} s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = bootstrap.database_url()
    name = bootstrap.database_name(url)
    if "bench" not in name:
        raise SystemExit(f"bench: refusing to use {name!r}: the name must contain 'bench'")
    os.environ.setdefault("UMS_TASKS_IN_PROCESS", "true")
    bootstrap.ensure_database(url)
    bootstrap.setup_django()
    bootstrap.migrate()
    configure()
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    from spamhold.models import Status

    zone, admin = reset()
    report: dict[str, Any] = {
        "issue": 6,
        "part": "spam hold on a real node",
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        },
        "messages": args.messages,
        "notes": [
            "Times are wall seconds in this process on 2 shared cores; the node's Postfix, "
            "sshd and PostgreSQL share them.",
            "Release: deliveries after the release are not timed; the relay target (IMAP "
            "node) has no Postfix, so the released mail is deferred, then purged.",
        ],
    }
    passed = True
    with tempfile.TemporaryDirectory(prefix="ums-bench-spamhold-") as tmp:
        cluster = start_cluster(Path(tmp) / "nodes")
        try:
            smtp_tnode, imap_tnode = cluster.nodes
            from servers.choices import NodeStatus
            from servers.models import Node

            # The domain's IMAP node: a relay target only (listed as serving, never
            # converged, nothing listening on port 25), see the module docstring.
            imap = node_row(zone, imap_tnode, "imap")
            Node.objects.filter(pk=imap.pk).update(status=NodeStatus.DEPLOYING)
            node = node_row(zone, smtp_tnode, "smtp")
            print("converging the SMTP node", flush=True)
            report["converge_s"] = round(converge(node), 2)
            node.refresh_from_db()
            report["ssh"] = ssh_round_trip(node)
            print(f"ssh: {report['ssh']}", flush=True)

            print(f"putting {args.messages} messages on hold", flush=True)
            report["inject_release"] = put_on_hold(smtp_tnode, args.messages, args.inject_parallel)
            print(f"   {report['inject_release']}", flush=True)
            print("1. ingest", flush=True)
            report["ingest"] = run_ingest(args, node, smtp_tnode)
            print("2. release", flush=True)
            release = run_outcome(args, "release", admin, smtp_tnode, Status.RELEASED)
            release["target_s"] = RELEASE_TARGET_S
            release["passed"] = release["wall_s"] < RELEASE_TARGET_S
            passed = passed and release["passed"]
            report["release"] = release

            if not args.no_delete:
                purge_queue(smtp_tnode)  # the released (deferred) mail: out of the way
                print(f"putting {args.messages} more messages on hold", flush=True)
                report["inject_delete"] = put_on_hold(
                    smtp_tnode, args.messages, args.inject_parallel
                )
                from spamhold import ingest

                again = ingest.ingest_node(node)
                if again.new != args.messages:
                    raise Failed(f"ingest before delete: {again.as_dict()}")
                print("3. delete", flush=True)
                report["delete"] = run_outcome(args, "delete", admin, smtp_tnode, Status.DELETED)
        finally:
            with contextlib.suppress(Exception):
                purge_queue(cluster.nodes[0])
            cluster.stop()
    report["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    report["passed"] = passed

    print(f"\nload average before: {report['machine']['loadavg_before']} on {os.cpu_count()} cores")
    print(f"ssh: connect {report['ssh']['connect_s']} s, no-op command p50 "
          f"{report['ssh']['true_p50_ms']} ms")  # fmt: skip
    print_breakdown(f"1a. ingest {args.messages} new", report["ingest"]["first"])
    print_breakdown("1b. ingest again (nothing new)", report["ingest"]["second"])
    verdict = "OK" if report["release"]["passed"] else "MISSED"
    print_breakdown(
        f"2. release {args.messages} (target < {RELEASE_TARGET_S:g} s: {verdict})",
        report["release"],
    )
    if "delete" in report:
        print_breakdown(f"3. delete {args.messages}", report["delete"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwrote {args.json}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
