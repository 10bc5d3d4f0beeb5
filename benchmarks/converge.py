"""Benchmark of issue 5: converging real mail nodes with 100,000 mailboxes.

Three measurements, on real sshd test nodes (tests/harness) running real Postfix and
Courier authdaemond in their own network and mount namespaces:

1. **Full converge of one SMTP node** (target < 5 s): desired state build, render,
   hash compare, upload, validation (``postfix check``, ``postmap`` of every map,
   ``makeuserdb``), install by rename and reload, through the real ``node.converge`` job
   handler, run in this process. Every phase is timed by wrapping the functions
   ``deploy.converge`` calls (behaviour unchanged), and one run is profiled with cProfile.
   "Full" means every managed file differs from the node's copy: before each run the
   node's copies are emptied, so everything is uploaded, compiled, installed and reloaded.
2. **A mailbox created through the API becomes deliverable** (target p95 < 3 s): POST
   ``/api/v1/mail/mailboxes/`` with a real token while a thread opens a fresh SMTP session
   to the node every ``--poll-ms`` until ``RCPT TO`` for the new address answers 250
   (the converge job's express step makes it so before the whole state is built). The converge
   runs on a real Celery worker (``--tasks worker``, the production path) and/or in the
   request's process (``--tasks inprocess``, ``UMS_TASKS_IN_PROCESS=true``).
3. **Twenty nodes converged at once** by the Celery worker (``--concurrency`` worker
   processes: the controller has no converge-specific concurrency setting, a converge is
   one job per node): wall time and per-node times, cold (first converge) and full.

The tree is one provider with organisations and departments, ``--domains`` domains with
Zipf-distributed sizes, system aliases, distribution lists, forwards, catch-alls and a few
mailboxes with restricted sending: seeded by COPY with one precomputed SHA512-CRYPT hash.

Usage::

    DATABASE_URL=postgres://root@127.0.0.1:5432/ums_bench_converge \\
    REDIS_URL=redis://127.0.0.1:6379/10 CELERY_BROKER_URL=redis://127.0.0.1:6379/10 \\
    .venv/bin/python benchmarks/converge.py

Needs root (network namespaces, bind mounts, port 22/25 inside the nodes) and the
``postfix``, ``courier-authdaemon`` and ``courier-authlib-userdb`` packages on the host (the
nodes share its /usr). The database name must contain "bench": reseeding recreates it.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import json
import logging
import math
import os
import platform
import pstats
import random
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import bootstrap  # noqa: E402

DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "converge.json"
SEED_KEY = "converge"
FULL_TARGET_S = 5.0
DELIVERABLE_TARGET_S = 3.0
PASSWORD = "Bench-Converge-Password-1"
QUEUE = "bench-converge"
MAILLOG = "/var/spool/postfix/maillog"

FIRST = [
    "anna", "boris", "chen", "dmitri", "elena", "farida", "georg", "hana", "ivan", "julia",
    "karim", "lena", "mikhail", "nadia", "oleg", "priya", "quentin", "rosa", "sergei", "tamar",
    "ulan", "vera", "wang", "xenia", "yusuf", "zara", "bat", "saran", "tuya", "munkh",
]  # fmt: skip
LAST = [
    "ivanova", "petrov", "smirnova", "kuznetsov", "popova", "sokolov", "lebedeva", "kozlov",
    "novikova", "morozov", "bold", "ganbaatar", "erdene", "batbayar", "tsogt", "dorj",
    "garcia", "muller", "rossi", "dubois", "silva", "kim", "tanaka", "nowak", "horvat",
]  # fmt: skip
WORDS = [
    "north", "south", "central", "coastal", "highland", "golden", "national", "civic",
    "public", "united", "alpine", "river", "forest", "valley", "harbor", "summit",
    "logistics", "finance", "health", "energy", "transport", "justice", "culture", "water",
]  # fmt: skip
TLDS = ["example", "example.org", "example.net", "gov.example", "edu.example"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mailboxes", type=int, default=100_000)
    parser.add_argument("--domains", type=int, default=250)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--full-runs", type=int, default=3, help="timed full converges")
    parser.add_argument("--incremental-runs", type=int, default=3)
    parser.add_argument("--creations", type=int, default=20, help="API creations per mode")
    parser.add_argument("--poll-ms", type=int, default=25, help="RCPT probe interval")
    parser.add_argument(
        "--tasks",
        default="worker,inprocess",
        help="comma list: worker (real Celery worker), inprocess (UMS_TASKS_IN_PROCESS)",
    )
    parser.add_argument("--nodes", type=int, default=20, help="fleet size of part 3 (0: skip)")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="Celery worker processes (compose: 8)"
    )
    parser.add_argument(
        "--imap",
        choices=["row", "converge"],
        default="row",
        help="the IMAP node: relay target only (default) or converged on every change too",
    )
    parser.add_argument("--only", choices=["full", "deliver", "fleet"], action="append")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--wait-quiet", type=int, default=0, metavar="SECONDS")
    parser.add_argument("--run-worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------ settings


def configure() -> None:
    """What tests/converge/conftest.py sets: only Postfix and Courier, a Postfix log file.

    The other services (ZFS, SpamAssassin, ClamAV, nginx) have their own benchmarks and
    would install packages on the nodes, which share this machine's /usr.
    """
    from django.conf import settings

    from deploy.services import registry
    from deploy.services.courier import SERVICE as COURIER
    from deploy.services.postfix import SERVICE as POSTFIX
    from ums.celery import app

    registry.SERVICES[:] = [COURIER, POSTFIX]
    settings.UMS_CONVERGE = {"postfix_maillog_file": MAILLOG}
    settings.UMS_AUTO_CONVERGE = True
    settings.UMS_CONVERGE_ON_APPROVAL = False
    # A queue of our own: nobody else's worker on this broker takes our jobs, nor ours theirs.
    app.conf.task_default_queue = QUEUE


def set_in_process(on: bool) -> None:
    """Switch between a real worker and in-process tasks (Celery checks at each call)."""
    from ums.celery import app

    app.conf.task_always_eager = on


def run_worker(args: argparse.Namespace) -> None:
    """The Celery worker process part 2 and 3 use (started by this script itself)."""
    os.environ["UMS_TASKS_IN_PROCESS"] = "false"
    bootstrap.setup_django()
    configure()
    from ums.celery import app

    app.worker_main(
        [
            "worker",
            "--loglevel",
            "WARNING",
            "--pool",
            "prefork",
            "--concurrency",
            str(args.concurrency),
            "--queues",
            QUEUE,
            "--hostname",
            f"bench-converge-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


@contextlib.contextmanager
def celery_worker(concurrency: int, log_path: Path) -> Iterator[subprocess.Popen]:
    from ums.celery import app

    env = {**os.environ, "UMS_TASKS_IN_PROCESS": "false"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--run-worker", "--concurrency", str(concurrency)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        name = None
        while name is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench: celery worker did not start:\n{log_path.read_text()}")
            for reply in app.control.ping(timeout=1.0) or []:
                for worker in reply:
                    if worker.startswith(f"bench-converge-{proc.pid}@"):
                        name = worker
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# ------------------------------------------------------------------------------- seeding


def recreate_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    name = unquote(urlsplit(url).path.lstrip("/"))
    admin = urlsplit(url)._replace(scheme="postgresql", path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def domain_sizes(total: int, domains: int, rng: random.Random) -> list[int]:
    """Zipf-like sizes: a few ministries with thousands of boxes, a long tail of small ones."""
    weights = [1 / (rank**1.05) for rank in range(1, domains + 1)]
    scale = total / sum(weights)
    sizes = [max(1, int(w * scale)) for w in weights]
    sizes[0] += total - sum(sizes)
    rng.shuffle(sizes)
    return sizes


def seed(args: argparse.Namespace) -> dict[str, Any]:
    """Customers, domains, aliases and mailboxes by COPY, in one transaction."""
    from django.db import connection, transaction

    from benchmarks import seeding
    from mail.models import Alias, Domain, Mailbox
    from mail.passwords import make_hash
    from tenants.models import Customer

    rng = random.Random(args.seed)
    now = datetime.datetime.now(datetime.UTC)
    password_hash = make_hash(PASSWORD)  # one hash for all: it is a benchmark
    started = time.perf_counter()
    with transaction.atomic():
        customers = [(1, "Bench Provider", None, "/1/", 0)]
        next_id = 2
        departments = []
        for org in range(8):
            org_id = next_id
            customers.append((org_id, f"Organisation {org}", 1, f"/1/{org_id}/", 1))
            next_id += 1
            for dept in range(4):
                path = f"/1/{org_id}/{next_id}/"
                customers.append((next_id, f"Department {org}.{dept}", org_id, path, 2))
                departments.append((next_id, path))
                next_id += 1
        seeding.copy_rows(
            Customer,
            ["id", "name", "parent_id", "path", "depth", "is_active", "notes", "created_at",
             "updated_at"],
            ((c[0], c[1], c[2], c[3], c[4], True, "", now, now) for c in customers),
        )  # fmt: skip
        owners = [(c[0], c[3]) for c in customers[1:]]
        sizes = domain_sizes(args.mailboxes, args.domains, rng)
        domains = []
        for d in range(args.domains):
            owner = owners[d % len(owners)] if d < len(owners) else rng.choice(departments)
            name = f"{rng.choice(WORDS)}-{rng.choice(WORDS)}{d}.{rng.choice(TLDS)}"
            domains.append((d + 1, owner[0], owner[1], name, sizes[d]))
        # A few small domains route unknown addresses to their postmaster (catch-all).
        catch_alls = {d[0] for d in sorted(domains, key=lambda d: d[4])[5:8]}
        seeding.copy_rows(
            Domain,
            ["id", "customer_id", "customer_path", "name", "unicode_name", "is_enabled",
             "default_quota_mb", "catch_all", "description", "created_at", "updated_at"],
            (
                (d[0], d[1], d[2], d[3], d[3], True, 1024,
                 f"postmaster@{d[3]}" if d[0] in catch_alls else "", "", now, now)
                for d in domains
            ),
        )  # fmt: skip
        mailbox_columns = [
            "id", "customer_id", "customer_path", "domain_id", "local_part", "email",
            "display_name", "password_hash", "password_changed_at", "quota_mb", "used_bytes",
            "used_updated_at", "is_enabled", "read_only", "can_delete", "can_send",
            "retention_days", "forward_to",
            "forward_keep_copy", "protocol_access", "hide_from_address_book", "created_at",
            "updated_at",
        ]  # fmt: skip
        members: dict[int, list[str]] = defaultdict(list)

        def mailbox_rows() -> Iterator[tuple]:
            pk = 0
            for d in domains:
                for j in range(d[4]):
                    first, last = rng.choice(FIRST), rng.choice(LAST)
                    local = f"{first}.{last}{j}"
                    email = f"{local}@{d[3]}"
                    if len(members[d[0]]) < 40:
                        members[d[0]].append(email)
                    roll = rng.random()
                    forward = [f"{first}.{last}@mail.partner.example"] if roll < 0.03 else []
                    pk += 1
                    yield (
                        pk, d[1], d[2], d[0], local, email, f"{first.title()} {last.title()}",
                        password_hash, now, 1024, None, None, not (0.03 <= roll < 0.04),
                        False, True, not (0.04 <= roll < 0.05), 30, json.dumps(forward),
                        roll < 0.015, json.dumps({"submission": "deny"} if roll > 0.98 else {}),
                        False, now, now,
                    )  # fmt: skip

        count = seeding.copy_rows(Mailbox, mailbox_columns, mailbox_rows())

        def alias_rows() -> Iterator[tuple]:
            pk = 0
            for d in domains:
                for local in ("postmaster", "abuse"):
                    targets = ["hostmaster@provider.example"]
                    pk += 1
                    yield (pk, d[1], d[2], d[0], local, f"{local}@{d[3]}", "alias", "",
                           json.dumps(targets), True, True, False, now, now)  # fmt: skip
                # Distribution lists in the bigger domains.
                for k in range(min(20, d[4] // 200)):
                    targets = rng.sample(members[d[0]], min(len(members[d[0]]), 8))
                    pk += 1
                    yield (pk, d[1], d[2], d[0], f"team{k}", f"team{k}@{d[3]}", "alias", "",
                           json.dumps(targets), True, False, False, now, now)  # fmt: skip

        aliases = seeding.copy_rows(
            Alias,
            ["id", "customer_id", "customer_path", "domain_id", "local_part", "email", "kind",
             "name", "targets", "is_enabled", "is_system", "hide_from_address_book", "created_at",
             "updated_at"],
            alias_rows(),
        )  # fmt: skip
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO mail_mailusage
                    (customer_id, customer_path, domains, mailboxes, aliases, quota_mb)
                SELECT c.id, c.path,
                    (SELECT count(*) FROM mail_domain d WHERE d.customer_id = c.id),
                    (SELECT count(*) FROM mail_mailbox m WHERE m.customer_id = c.id),
                    (SELECT count(*) FROM mail_alias a WHERE a.customer_id = c.id),
                    (SELECT coalesce(sum(quota_mb), 0) FROM mail_mailbox m
                     WHERE m.customer_id = c.id)
                FROM tenants_customer c
                """
            )
        seeding.reset_sequences(Customer, Domain, Mailbox, Alias)
        seeding.ensure_info_table()
        sizes_info = seed_info(args)
        seeding.write_info(SEED_KEY, sizes_info)
    seeding.analyze("tenants_customer", "mail_domain", "mail_alias", "mail_mailbox", vacuum=True)
    return {
        "customers": len(customers),
        "domains": len(domains),
        "mailboxes": count,
        "aliases": aliases,
        "largest_domain": max(sizes),
        "catch_all_domains": len(catch_alls),
        "seconds": round(time.perf_counter() - started, 1),
    }


def seed_info(args: argparse.Namespace) -> dict[str, int]:
    return {"mailboxes": args.mailboxes, "domains": args.domains, "seed": args.seed, "v": 1}


def seeded(args: argparse.Namespace) -> bool:
    from django.db import connection

    from benchmarks import seeding

    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [seeding.INFO_TABLE])
        if not cursor.fetchone()[0]:
            return False
    return seeding.read_info(SEED_KEY) == seed_info(args)


def api_client() -> Any:
    """A root administrator with every permission and a token, as a script would use."""
    from django.test import Client

    from tenants import actions as tenant_actions
    from tenants import permissions as perms
    from tenants.models import Administrator, Customer

    admin = Administrator.objects.filter(username="bench.converge").first()
    if admin is None:
        admin = tenant_actions.create_administrator(
            actor=None,
            customer=Customer.objects.get(pk=1),
            username="bench.converge",
            full_name="Bench Converge",
            email="bench.converge@provider.example",
            password=PASSWORD,
            permissions=list(perms.ALL),
        )
    _token, secret = tenant_actions.create_token(actor=admin, name=f"bench {time.time()}")
    return Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {secret}")


# --------------------------------------------------------------------------------- nodes


def reset_servers() -> Any:
    """Forget the nodes and jobs of an earlier run; a zone for this one."""
    from deploy import controller_keys
    from servers.models import MetricSample, Node, NodeAlert, Zone
    from tenants.models import Customer
    from ums.models import Job

    for model in (MetricSample, NodeAlert, Job, Node, Zone):
        model.objects.all().delete()
    controller_keys.current()
    root = Customer.objects.get(pk=1)
    return Zone.objects.create(customer=root, customer_path=root.path, name="Bench DC")


def start_cluster(base: Path, count: int) -> Any:
    from deploy import controller_keys
    from deploy.connector.keys import public_key_openssh
    from tests.harness.sshnodes import NodeCluster
    from tests.servers.nodes import PRIVATE_PATHS, install_stand_ins

    key = controller_keys.current()
    pkey = controller_keys.private_key(key)
    cluster = NodeCluster(
        base,
        count,
        public_key_openssh(pkey, "bench"),
        private_paths=(*PRIVATE_PATHS, "/var/lib/postfix", "/run/courier", "/var/lib/courier"),
    )
    cluster.start()
    if cluster.mode != "netns" or not cluster.isolated:
        cluster.stop()
        raise SystemExit("bench: mail nodes need network and mount namespaces (ports 25, 22)")
    for tnode in cluster.nodes:
        install_stand_ins(tnode)
    return cluster


def node_row(zone: Any, tnode: Any, role: str = "smtp") -> Any:
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


def precreate_maildirs(tnode: Any) -> float:
    """The IMAP node's mail store as an existing node has it: one Maildir per mailbox.

    Written from this machine straight into the node's private /var/mail (a first converge
    would create them with three commands per mailbox, minutes for 100,000); converge then
    only checks that each exists.
    """
    from mail.models import Mailbox

    started = time.perf_counter()
    root = tnode.path("/var/mail/vhosts")
    for domain, local in Mailbox.objects.values_list("domain__name", "local_part").iterator(
        chunk_size=10_000
    ):
        maildir = root / domain / local / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
            os.chown(maildir / sub, 5000, 5000)
        os.chown(maildir, 5000, 5000)
        os.chown(maildir.parent, 5000, 5000)
    for domain_dir in root.iterdir():
        os.chown(domain_dir, 5000, 5000)
    return time.perf_counter() - started


def managed_paths(node: Any) -> list[str]:
    from deploy import converge, desired

    state = desired.build(node)
    return [f.path for s in converge.applicable_services(state) for f in s.render(state)]


def blank_files(tnode: Any, paths: list[str]) -> None:
    """Empty the node's copies so the next converge finds every file changed (a full run)."""
    for path in paths:
        host = tnode.path(path)
        if host.exists():
            host.write_bytes(b"")


def run_job(node: Any) -> Any:
    """Run one converge job in this process exactly as a worker would (jobs.run)."""
    from ums import jobs
    from ums.models import Job

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
    return job


# ----------------------------------------------------------------------- instrumentation


class Phases:
    """Exclusive wall time per phase (a nested phase pauses its parent) and per command."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.commands: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])
        self.bytes_uploaded = 0
        self._stack: list[list[Any]] = []
        self._main = threading.get_ident()
        self._local = threading.local()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if threading.get_ident() != self._main:
            # A service's checker in converge's validation threads: its own wall time,
            # overlapping the main thread's "5 validate (concurrent, wall)".
            label, outer = f"{name} (thread)", getattr(self._local, "name", None)
            self._local.name = label
            started = time.perf_counter()
            try:
                yield
            finally:
                self.seconds[label] += time.perf_counter() - started
                self._local.name = outer
            return
        now = time.perf_counter()
        if self._stack:
            self.seconds[self._stack[-1][0]] += now - self._stack[-1][1]
        self._stack.append([name, now])
        self.calls[name] += 1
        try:
            yield
        finally:
            end = time.perf_counter()
            self.seconds[name] += end - self._stack.pop()[1]
            if self._stack:
                self._stack[-1][1] = end

    def current(self) -> str:
        if threading.get_ident() != self._main:
            return getattr(self._local, "name", None) or "-"
        return self._stack[-1][0] if self._stack else "-"


def _label(argv: list[str]) -> str:
    if argv[0] == "sh" and len(argv) > 2:
        script = argv[2]
        if "sha256sum" in script:
            return "sh: stat+sha256sum (facts)"
        return "sh: " + script.strip().split()[0]
    if argv[0] in ("postfix", "postconf", "postmap") and len(argv) > 1:
        if argv[0] == "postmap":
            return "postmap -q" if "-q" in argv else "postmap (compile)"
        return f"{argv[0]} {argv[-1]}"
    return argv[0]


@contextlib.contextmanager
def instrumented(phases: Phases) -> Iterator[None]:
    """Wrap the functions a converge calls, by phase; restore them afterwards."""
    from deploy import converge, desired, packages
    from deploy.connector.ssh import SSHConnector
    from deploy.services.registry import SERVICES
    from ums import jobs

    saved: list[tuple[Any, str, Any, bool]] = []

    def wrap(owner: Any, attr: str, name: str | Callable[..., str]) -> None:
        original = getattr(owner, attr)
        own = attr in vars(owner)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            label = name(*args, **kwargs) if callable(name) else name
            with phases.phase(label):
                return original(*args, **kwargs)

        saved.append((owner, attr, vars(owner).get(attr) if own else None, own))
        setattr(owner, attr, wrapper)

    wrap(jobs, "run", "job bookkeeping (DB, locks, audit)")
    wrap(desired, "build", "1 build desired state")
    wrap(converge, "render", lambda service, state: f"2 render {service.name}")
    wrap(converge, "remote_facts", "3 hash compare (node facts)")
    if hasattr(converge, "prepare"):  # services' non-file preparation (ZFS datasets...)
        wrap(converge, "prepare", "0 prepare (services' facts)")
    wrap(converge, "sha256", "3 hash compare (local sha256)")
    wrap(packages, "ensure", "0 packages check")
    wrap(converge, "_stage", lambda conn, service, **_kw: f"4 stage copy {service.name}")
    # apply_services now also waits for the check threads (validation wall time shows
    # here, the checks themselves as "(thread)" phases).
    wrap(converge, "apply_services", "6 install + wait for checks (main thread)")
    wrap(converge, "light_stage", lambda conn, service, changes: f"4 light stage {service.name}")
    wrap(SSHConnector, "put_file", "5 upload")
    wrap(SSHConnector, "connect", "0 ssh connect")
    for service in SERVICES:
        wrap(service, "validate", f"5 validate {service.name}")
        wrap(service, "validate_incremental", f"5 validate {service.name} incremental")
        wrap(service, "activate", f"7 reload {service.name}")

    original_run = SSHConnector.run
    original_put = SSHConnector.put_file

    def run(self: Any, argv: list[str], **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original_run(self, argv, **kwargs)
        finally:
            entry = phases.commands[(phases.current(), _label(argv))]
            entry[0] += 1
            entry[1] += time.perf_counter() - started

    def put_file(self: Any, remote_path: str, data: bytes, **kwargs: Any) -> Any:
        phases.bytes_uploaded += len(data)
        return original_put(self, remote_path, data, **kwargs)

    SSHConnector.run = run  # type: ignore[method-assign]
    SSHConnector.put_file = put_file  # type: ignore[method-assign]
    try:
        yield
    finally:
        SSHConnector.run = original_run  # type: ignore[method-assign]
        SSHConnector.put_file = original_put  # type: ignore[method-assign]
        for owner, attr, value, own in reversed(saved):
            if own:
                setattr(owner, attr, value)
            else:
                delattr(owner, attr)


def timed_job(node: Any) -> tuple[float, Phases]:
    phases = Phases()
    with instrumented(phases):
        started = time.perf_counter()
        run_job(node)
        total = time.perf_counter() - started
    return total, phases


def phase_table(runs: list[tuple[float, Phases]]) -> dict[str, Any]:
    """Median of each phase over the runs, and the commands of the median run."""
    names = sorted({name for _t, p in runs for name in p.seconds})
    phases = {name: round(statistics.median(p.seconds.get(name, 0.0) for _t, p in runs), 3)
              for name in names}  # fmt: skip
    median_run = sorted(runs, key=lambda r: r[0])[len(runs) // 2][1]
    commands = sorted(
        (
            {"phase": phase, "command": label, "count": n, "seconds": round(secs, 3)}
            for (phase, label), (n, secs) in median_run.commands.items()
        ),
        key=lambda row: -row["seconds"],
    )
    return {
        "total_s": [round(t, 3) for t, _p in runs],
        "median_s": round(statistics.median(t for t, _p in runs), 3),
        "phases_s": phases,
        "uploaded_bytes": median_run.bytes_uploaded,
        "commands": commands,
    }


def profile_job(node: Any, top: int = 25) -> list[dict[str, Any]]:
    """cProfile of one converge job in this process (controller CPU, waits show as I/O)."""
    profiler = cProfile.Profile()
    profiler.enable()
    run_job(node)
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, func), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{Path(filename).name}:{line}({func})",
                "calls": calls,
                "tottime_s": round(tottime, 3),
                "cumtime_s": round(cumtime, 3),
            }
        )
    rows.sort(key=lambda r: -r["tottime_s"])
    return rows[:top]


# ------------------------------------------------------------------------- measurements


def bench_full(args: argparse.Namespace, node: Any, tnode: Any) -> dict[str, Any]:
    """Part 1: cold first converge, full re-converges, incremental ones, no-change one."""
    from mail.models import Domain, Mailbox

    paths = managed_paths(node)
    cold = timed_job(node)
    print(f"  cold first converge: {cold[0]:.2f} s", flush=True)
    full_runs = []
    for i in range(args.full_runs):
        blank_files(tnode, paths)
        full_runs.append(timed_job(node))
        print(f"  full converge {i + 1}/{args.full_runs}: {full_runs[-1][0]:.2f} s", flush=True)
    incremental = []
    domain = Domain.objects.order_by("-id").first()
    template = Mailbox.objects.filter(domain=domain).first()
    for i in range(args.incremental_runs):
        # Straight into the table: no signal, so no job elsewhere races this one.
        local = f"incr{int(time.time())}x{i}"
        Mailbox.objects.bulk_create(
            [
                Mailbox(
                    customer_id=domain.customer_id,
                    customer_path=domain.customer_path,
                    domain=domain,
                    local_part=local,
                    email=f"{local}@{domain.name}",
                    password_hash=template.password_hash,
                )
            ]
        )
        incremental.append(timed_job(node))
        print(f"  one mailbox added: {incremental[-1][0]:.2f} s", flush=True)
    unchanged = timed_job(node)
    print(f"  nothing changed: {unchanged[0]:.2f} s", flush=True)
    blank_files(tnode, paths)
    profile = profile_job(node)
    return {
        "cold": phase_table([cold]),
        "full": phase_table(full_runs),
        "one_mailbox_added": phase_table(incremental),
        "no_change": phase_table([unchanged]),
        "profile_full_top_tottime": profile,
        "file_sizes_bytes": {p: tnode.path(p).stat().st_size for p in paths},
        "target_s": FULL_TARGET_S,
        "passed": phase_table(full_runs)["median_s"] < FULL_TARGET_S,
    }


LAST_REPLY: dict[str, Any] = {}


def rcpt_code(host: str, address: str) -> int:
    """RCPT TO in a fresh session: smtpd reopens changed maps only between sessions."""
    with smtplib.SMTP(host, 25, timeout=10) as smtp:
        smtp.ehlo("probe.bench.example")
        smtp.mail("probe@outside.example")
        code, message = smtp.rcpt(address)
        LAST_REPLY[address] = (code, message.decode(errors="replace"))
        return code


def probe_until_accepted(host: str, address: str, interval: float, out: dict[str, Any]) -> None:
    """RCPT TO every ``interval`` until 250 (at most 60 s); sets ``out["at"]``."""
    deadline = out["started"] + 60
    probes = 0
    while time.perf_counter() < deadline:
        probes += 1
        if rcpt_code(host, address) == 250:
            out["at"] = time.perf_counter()
            break
        time.sleep(interval)
    out["probes"] = probes


def wait_idle(node_ids: list[int], timeout: float = 300) -> None:
    """Until no converge of these nodes is pending or running."""
    from ums.models import Job

    deadline = time.monotonic() + timeout
    ids = [str(i) for i in node_ids]
    while Job.objects.filter(
        kind="node.converge", object_id__in=ids, status__in=[Job.PENDING, Job.RUNNING]
    ).exists():
        if time.monotonic() > deadline:
            raise SystemExit("bench: converge jobs did not finish in time")
        time.sleep(0.05)


def bench_deliverable(
    args: argparse.Namespace, client: Any, node: Any, tnode: Any, mode: str
) -> dict[str, Any]:
    """Part 2: POST a mailbox while polling RCPT TO on the node until 250."""
    from mail.models import Domain
    from ums.models import Job

    set_in_process(mode == "inprocess")
    rng = random.Random(args.seed + 7)
    domains = list(Domain.objects.order_by("id").values_list("pk", "name"))
    samples: list[dict[str, Any]] = []
    # In process the converge runs in this process, so its phases can be timed.
    runs: list[tuple[float, Phases]] = []
    stamp = int(time.time())
    for i in range(args.creations):
        wait_idle([node.pk])
        time.sleep(0.2)
        domain_id, domain_name = rng.choice(domains)
        local = f"new{stamp}.{mode[:2]}{i}"
        address = f"{local}@{domain_name}"
        assert rcpt_code(tnode.address, address) != 250, "address accepted before creation"
        since = datetime.datetime.now(datetime.UTC)
        phases = Phases()
        timing = instrumented(phases) if mode == "inprocess" else contextlib.nullcontext()
        # Probed from a thread while the POST runs: in process the request itself runs the
        # converge, and the address is accepted long before the request returns.
        accepted: dict[str, Any] = {}
        probe = threading.Thread(
            target=probe_until_accepted,
            args=(tnode.address, address, args.poll_ms / 1000, accepted),
            daemon=True,
        )
        started = time.perf_counter()
        accepted["started"] = started
        probe.start()
        with timing:
            response = client.post(
                "/api/v1/mail/mailboxes/",
                {"domain": domain_id, "localPart": local, "password": "Amber-Quarry-Willow-88"},
                content_type="application/json",
            )
        post_s = time.perf_counter() - started
        if mode == "inprocess":
            runs.append((post_s, phases))
        if response.status_code != 201:
            raise SystemExit(f"bench: create answered {response.status_code}: {response.content!r}")
        probe.join(timeout=70)
        if "at" not in accepted:
            jobs = list(Job.objects.order_by("-pk").values_list("kind", "status", "error")[:3])
            raise SystemExit(
                f"bench: {address} not accepted after 60 s ({LAST_REPLY.get(address)}); "
                f"last jobs {jobs}"
            )
        total_s = accepted["at"] - started
        probes = accepted["probes"]
        wait_idle([node.pk])  # the job finishes its bookkeeping after the reload
        job = (
            Job.objects.filter(kind="node.converge", object_id=str(node.pk), created_at__gte=since)
            .order_by("created_at")
            .first()
        )
        row = {"address": address, "post_s": round(post_s, 3), "deliverable_s": round(total_s, 3),
               "probes": probes}  # fmt: skip
        if job is not None and job.started_at and job.finished_at:
            row["queue_wait_s"] = round((job.started_at - job.created_at).total_seconds(), 3)
            row["job_s"] = round((job.finished_at - job.started_at).total_seconds(), 3)
        samples.append(row)
        print(
            f"  [{mode}] {i + 1}/{args.creations}: deliverable after {total_s:.2f} s "
            f"(POST {post_s:.2f} s, job {row.get('job_s', '?')} s)",
            flush=True,
        )
    set_in_process(False)
    values = [s["deliverable_s"] for s in samples]
    result = {
        "mode": mode,
        "creations": len(samples),
        "p50_s": round(percentile(values, 50), 3),
        "p95_s": round(percentile(values, 95), 3),
        "max_s": round(max(values), 3),
        "post_p95_s": round(percentile([s["post_s"] for s in samples], 95), 3),
        "target_p95_s": DELIVERABLE_TARGET_S,
        "samples": samples,
    }
    jobs_s = [s["job_s"] for s in samples if "job_s" in s]
    if jobs_s:
        result["job_p50_s"] = round(percentile(jobs_s, 50), 3)
        result["job_p95_s"] = round(percentile(jobs_s, 95), 3)
    if runs:
        result["phases"] = phase_table(runs)
    waits = [s["queue_wait_s"] for s in samples if "queue_wait_s" in s]
    if waits:
        result["queue_wait_p95_s"] = round(percentile(waits, 95), 3)
    result["passed"] = result["p95_s"] < DELIVERABLE_TARGET_S
    return result


def fleet_round(nodes: list[Any], label: str) -> dict[str, Any]:
    """Queue one converge per node (as dirty.mark does) and wait for all of them."""
    from django.db import transaction

    from deploy import dirty
    from ums.models import Job

    started = time.perf_counter()
    since = datetime.datetime.now(datetime.UTC)
    for node in nodes:
        with transaction.atomic():
            dirty.enqueue(node, reason=f"bench {label}")
    wait_idle([n.pk for n in nodes], timeout=1800)
    wall = time.perf_counter() - started
    jobs = list(
        Job.objects.filter(kind="node.converge", created_at__gte=since).order_by("started_at")
    )
    failed = [j for j in jobs if j.status != Job.SUCCEEDED]
    if failed:
        error = failed[0].error[-2000:]
        raise SystemExit(f"bench: {len(failed)} fleet converge(s) failed: {error}")
    per_node = [
        {
            "node": j.title.removeprefix("Converge "),
            "queue_wait_s": round((j.started_at - j.created_at).total_seconds(), 2),
            "job_s": round((j.finished_at - j.started_at).total_seconds(), 2),
        }
        for j in jobs
    ]
    durations = [p["job_s"] for p in per_node]
    print(
        f"  {label}: {len(jobs)} nodes in {wall:.1f} s wall; per node median "
        f"{statistics.median(durations):.1f} s, max {max(durations):.1f} s",
        flush=True,
    )
    return {
        "wall_s": round(wall, 2),
        "per_node_median_s": round(statistics.median(durations), 2),
        "per_node_max_s": round(max(durations), 2),
        "per_node_min_s": round(min(durations), 2),
        "per_node": per_node,
    }


def bench_fleet(args: argparse.Namespace, zone: Any, tnodes: list[Any]) -> dict[str, Any]:
    """Part 3: N fresh SMTP nodes serving the whole tree, converged by the worker at once."""
    nodes = [node_row(zone, t) for t in tnodes]
    paths = managed_paths(nodes[0])
    cold = fleet_round(nodes, "cold (first converge)")
    for tnode in tnodes:
        blank_files(tnode, paths)
    full = fleet_round(nodes, "full (every file changed)")
    return {
        "nodes": len(nodes),
        "worker_concurrency": args.concurrency,
        "mailboxes_per_node": args.mailboxes,
        "cold": cold,
        "full": full,
    }


# ------------------------------------------------------------------------------ report


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


def wait_quiet(seconds: int) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and os.getloadavg()[0] >= 1.5:
        time.sleep(5)


def print_full(full: dict[str, Any]) -> None:
    print(f"\n1. one SMTP node, {full['mailboxes']} mailboxes (median of the runs, seconds)")
    cases = ("cold", "full", "one_mailbox_added", "no_change")
    phases = sorted({name for case in cases for name in full[case]["phases_s"]})
    print(f"   {'phase':40} " + " ".join(f"{c[:12]:>12}" for c in cases))
    for name in phases:
        print(
            f"   {name:40} "
            + " ".join(f"{full[c]['phases_s'].get(name, 0.0):12.3f}" for c in cases)
        )
    print(f"   {'TOTAL':40} " + " ".join(f"{full[c]['median_s']:12.3f}" for c in cases))
    verdict = "OK" if full["passed"] else "MISSED"
    print(f"   full converge target < {FULL_TARGET_S} s: {verdict}")
    print(f"   uploaded in a full run: {full['full']['uploaded_bytes'] / 1e6:.1f} MB")
    print("   top node commands of the median full run:")
    for row in full["full"]["commands"][:10]:
        print(
            f"     {row['seconds']:7.3f} s  {row['count']:3}x  {row['command']}  [{row['phase']}]"
        )
    print("   top controller functions (cProfile, tottime) of a full run:")
    for row in full["profile_full_top_tottime"][:12]:
        print(f"     {row['tottime_s']:7.3f} s  {row['calls']:8}  {row['function']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_worker:
        run_worker(args)
        return 0
    os.environ.setdefault("UMS_TASKS_IN_PROCESS", "false")
    if not os.environ.get("CELERY_BROKER_URL") and "worker" in args.tasks:
        raise SystemExit("bench: CELERY_BROKER_URL is needed for the worker (or --tasks inprocess)")
    url = bootstrap.database_url()
    name = bootstrap.database_name(url)
    if "bench" not in name:
        raise SystemExit(f"bench: refusing to use {name!r}: the name must contain 'bench'")
    bootstrap.ensure_database(url)
    bootstrap.setup_django()
    bootstrap.migrate()
    seed_report: dict[str, Any] = {}
    if args.reseed or not seeded(args):
        from django.db import connections

        connections.close_all()
        print(f"seeding {args.mailboxes} mailboxes in {args.domains} domains", flush=True)
        recreate_database(url)
        bootstrap.migrate()
        seed_report = seed(args)
        print(f"seeded in {seed_report['seconds']} s: {seed_report}", flush=True)
    configure()
    set_in_process(False)
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    only = set(args.only or ["full", "deliver", "fleet"])
    modes = [m.strip() for m in args.tasks.split(",") if m.strip()]
    zone = reset_servers()
    client = api_client()
    wait_quiet(args.wait_quiet)
    load_before = os.getloadavg()
    report: dict[str, Any] = {
        "issue": 5,
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
        },
        "seed": seed_report,
        "sizes": seed_info(args),
    }
    fleet_size = args.nodes if "fleet" in only else 0
    with tempfile.TemporaryDirectory(prefix="ums-bench-converge-") as tmp:
        cluster = start_cluster(Path(tmp) / "nodes", 2 + fleet_size)
        try:
            main_tnode, imap_tnode = cluster.nodes[:2]
            # The IMAP node the SMTP nodes relay to: without one Postfix answers RCPT TO
            # with "no IMAP node for domain". By default it is a relay target only (status
            # "deploying": listed as serving, not converged on mail changes), so parts 1-3
            # time the SMTP path alone; --imap converge makes it a converged node too.
            imap = node_row(zone, imap_tnode, role="imap")
            if args.imap == "converge":
                store_s = precreate_maildirs(imap_tnode)
                started = time.perf_counter()
                run_job(imap)
                report["imap_node"] = {
                    "mode": "converged on every change",
                    "maildirs_precreated_s": round(store_s, 1),
                    "first_converge_s": round(time.perf_counter() - started, 2),
                }
            else:
                from servers.choices import NodeStatus
                from servers.models import Node

                Node.objects.filter(pk=imap.pk).update(status=NodeStatus.DEPLOYING)
                report["imap_node"] = {"mode": "relay target only (status deploying)"}
            print(f"IMAP node: {report['imap_node']}", flush=True)
            node = node_row(zone, main_tnode)
            if "full" in only:
                print("1. full converge of one SMTP node", flush=True)
                full = bench_full(args, node, main_tnode)
                full["mailboxes"] = args.mailboxes
                full["loadavg_after"] = os.getloadavg()
                report["full"] = full
            else:
                run_job(node)
            needs_worker = ("deliver" in only and "worker" in modes) or fleet_size
            worker = (
                celery_worker(args.concurrency, Path(tmp) / "worker.log")
                if needs_worker
                else contextlib.nullcontext()
            )
            with worker:
                if "deliver" in only:
                    report["deliverable"] = []
                    for mode in modes:
                        print(f"2. new mailbox deliverable ({mode})", flush=True)
                        result = bench_deliverable(args, client, node, main_tnode, mode)
                        result["loadavg_after"] = os.getloadavg()
                        report["deliverable"].append(result)
                if fleet_size:
                    print(f"3. {fleet_size} nodes at once, worker concurrency {args.concurrency}")
                    from servers.choices import NodeStatus
                    from servers.models import Node

                    # Out of the way: only the fleet converges now.
                    Node.objects.filter(pk=node.pk).update(status=NodeStatus.DECOMMISSIONED)
                    report["fleet"] = bench_fleet(args, zone, cluster.nodes[2:])
                    report["fleet"]["loadavg_after"] = os.getloadavg()
        finally:
            cluster.stop()
    report["machine"]["loadavg_after"] = os.getloadavg()

    print(f"\nload average before: {load_before} on {os.cpu_count()} cores")
    if "full" in report:
        print_full(report["full"])
    for result in report.get("deliverable", []):
        verdict = "OK" if result["passed"] else "MISSED"
        print(
            f"\n2. new mailbox -> RCPT TO 250 ({result['mode']}, {result['creations']} creations): "
            f"p50 {result['p50_s']} s, p95 {result['p95_s']} s, max {result['max_s']} s "
            f"(target p95 < {DELIVERABLE_TARGET_S} s: {verdict}); POST p95 {result['post_p95_s']} s"
            + (f", job p95 {result['job_p95_s']} s" if "job_p95_s" in result else "")
        )
    if "fleet" in report:
        fleet = report["fleet"]
        print(
            f"\n3. {fleet['nodes']} nodes x {fleet['mailboxes_per_node']} mailboxes, "
            f"worker concurrency {fleet['worker_concurrency']}:"
        )
        for key in ("cold", "full"):
            r = fleet[key]
            print(
                f"   {key:5} wall {r['wall_s']} s; per node median {r['per_node_median_s']} s, "
                f"min {r['per_node_min_s']} s, max {r['per_node_max_s']} s"
            )
    passed = [report["full"]["passed"]] if "full" in report else []
    passed += [r["passed"] for r in report.get("deliverable", [])]
    report["passed"] = all(passed)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwrote {args.json}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
