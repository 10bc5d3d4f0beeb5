"""Seed audit records with COPY: realistic actions spread over the customer tree.

Each record is what :func:`ums.auditing.record` would have written: ``search_text`` as
``AuditRecord.build_search_text`` builds it, and a real hash chain
(:func:`audit.chain.compute_hash`), so ``manage.py audit_verify`` passes on the seeded
database and new appends continue the chain (the head row is set to the last record).
Generated rows are checked against the model's own methods before the load, and rows read
back through the ORM are checked after it, before the transaction commits.

Speed: events (who did what to which object, with before/after values) come from a pool of
pre-encoded templates, activity-weighted over customers and administrators; each record
splices its own seq, time, channel, IP and request id into one and hashes it. The table is
truncated and loaded with ``COPY ... (FREEZE)`` in one transaction, its secondary indexes
dropped for the load and rebuilt afterwards (definitions read from the catalogue, so
whatever the migrations define comes back), then analysed. PostgreSQL's side (the
generated ``search_vector``, the GIN build, ANALYZE at statistics target 1000) dominates.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction

from audit import chain
from audit.models import AuditChainHead, AuditRecord
from tenants.models import Administrator, Customer

from . import seeding

INFO_KEY = "audit"
VERSION = 3

# The words the benchmark searches for. COMMON_WORD is the most frequent word of the notes
# vocabulary (Zipf-distributed); RARE_WORD is planted in a handful of records only.
NOTE_WORDS = seeding.words(
    "quota contract renewal migration archive invoice mailbox storage license backup "
    "retention forwarding alias signature vacation filter spam quarantine relay policy "
    "domain certificate rotation password reset audit review approval request ticket "
    "escalation incident maintenance window upgrade downgrade trial pilot onboarding "
    "offboarding transfer merger billing discount contact phone address postal branch "
    "headquarters warehouse regional national provincial district municipal federal "
    "language russian mongolian english greeting footer disclaimer compliance gdpr legal "
    "hold export import sync calendar shared folder permissions delegate assistant "
    "secretary director manager accountant engineer operator support helpdesk"
)
COMMON_WORD = NOTE_WORDS[0]
RARE_WORD = "zanzibar"
ACTION_FILTER = "customer.update"
RARE_ACTION = "customer.move"  # 0.3% of the records

ACTIONS: list[tuple[str, float]] = [
    ("auth.login", 22),
    ("auth.logout", 8),
    ("auth.login_failed", 4),
    ("token.use", 14),
    ("token.create", 0.6),
    ("token.revoke", 0.3),
    ("customer.update", 12),
    ("customer.create", 2),
    ("customer.move", 0.3),
    ("customer.disable", 0.4),
    ("customer.enable", 0.2),
    ("administrator.create", 2),
    ("administrator.update", 5),
    ("administrator.password", 1.5),
    ("mailbox.create", 6),
    ("mailbox.update", 9),
    ("mailbox.delete", 1.5),
    ("domain.create", 0.8),
    ("spamhold.release", 5),
    ("spamhold.delete", 2.5),
]
CHANNELS = [("portal", 55), ("api", 35), ("cli", 5), ("task", 5)]

COLUMNS = (
    "id",
    "seq",
    "timestamp",
    "actor_id",
    "actor_name",
    "source_ip",
    "channel",
    "request_id",
    "action",
    "object_type",
    "object_id",
    "object_repr",
    "customer_id",
    "customer_path",
    "changes",
    "search_text",
    "prev_hash",
    "hash",
    "chain_pos",
    "prev_seq",
)


@dataclass(frozen=True)
class Cust:
    id: int
    path: str
    name: str
    slug: str


@dataclass(frozen=True)
class Admin:
    id: int
    username: str
    full_name: str
    customer: Cust
    permissions: tuple[str, ...]
    audit_name: str  # as Administrator.audit_name


def search_text(
    action: str,
    actor_name: str,
    object_type: str,
    object_repr: str,
    object_id: str,
    changes: dict[str, Any],
) -> str:
    """The same text as ``AuditRecord.build_search_text`` (checked on samples)."""
    actor = actor_name.replace("<", " ").replace(">", " ")
    parts = [action, actor, object_type, object_repr, object_id]
    for side in ("before", "after"):
        for key, value in (changes.get(side) or {}).items():
            parts.append(f"{key} {value}")
    return " ".join(str(p) for p in parts if p)[:4000]


class Generator:
    """Produces audit rows for random events; deterministic for a given seed."""

    def __init__(self, rng: random.Random, customers: list[Cust], admins: list[Admin]) -> None:
        self.rng = rng
        self.customers = customers
        self.admins = admins
        admins_by_path: dict[str, list[Admin]] = {}
        for admin in admins:
            admins_by_path.setdefault(admin.customer.path, []).append(admin)
        self.admins_by_path = admins_by_path
        self.root_admins = [a for a in admins if a.customer.path.count("/") == 2] or admins[:1]
        self._managers: dict[str, list[Admin]] = {}
        # Activity is skewed: some customers and administrators are far busier than others.
        self.customer_cum = list(
            itertools.accumulate(rng.lognormvariate(0, 1.0) for _ in customers)
        )
        self.admin_cum = list(itertools.accumulate(rng.lognormvariate(0, 1.0) for _ in admins))
        self.word_cum = list(
            itertools.accumulate(1 / (r + 1) ** 1.1 for r in range(len(NOTE_WORDS)))
        )

    def managers(self, path: str) -> list[Admin]:
        """Administrators whose home customer is this one or above it."""
        found = self._managers.get(path)
        if found is None:
            ids = path.strip("/").split("/")
            found = []
            for i in range(len(ids)):
                found.extend(self.admins_by_path.get("/" + "/".join(ids[: i + 1]) + "/", ()))
            found = found or self.root_admins
            self._managers[path] = found
        return found

    def notes(self) -> str:
        count = self.rng.randint(2, 7)
        return " ".join(self.rng.choices(NOTE_WORDS, cum_weights=self.word_cum, k=count))

    def ip(self) -> str:
        r = self.rng.getrandbits(24)
        return f"10.{r >> 16}.{(r >> 8) & 255}.{r & 255}"

    def event(
        self, action: str, customer: Cust, admin: Admin
    ) -> tuple[Admin | None, str, str, str, Cust | None, dict]:
        """(actor, object_type, object_id, object_repr, customer, changes) for one action.

        ``customer`` and ``admin`` are drawn in bulk beforehand (activity-weighted); an
        event uses the one its kind needs.
        """
        rng = self.rng
        kind = action.split(".", 1)[0]
        if kind in {"auth", "token"}:
            if action == "auth.login_failed":
                if rng.random() < 0.15:  # an unknown username: no customer, no object id
                    name = f"{rng.choice(['admin', 'root', 'test', 'info'])}{rng.randint(1, 99)}"
                    return (
                        None,
                        "tenants.administrator",
                        "",
                        name,
                        None,
                        {"before": {}, "after": {}, "username": name},
                    )
                return (
                    None,
                    "tenants.administrator",
                    str(admin.id),
                    admin.username,
                    admin.customer,
                    {"before": {}, "after": {}, "username": admin.username},
                )
            if kind == "auth":
                return (
                    admin,
                    "tenants.administrator",
                    str(admin.id),
                    admin.username,
                    admin.customer,
                    {"before": {}, "after": {}},
                )
            token_id = str(admin.id * 10 + rng.randint(0, 3))
            repr_ = f"{rng.choice(['ci', 'backup', 'billing', 'monitoring'])} token"
            changes: dict[str, Any] = {"before": {}, "after": {}}
            if action == "token.use":
                changes["ip"] = self.ip()
            elif action == "token.create":
                changes["after"] = {"name": repr_, "owner": admin.id, "read_only": False}
            else:
                changes["after"] = {"revoked_at": "2025-06-01T10:00:00+00:00"}
            return (
                admin,
                "tenants.apitoken",
                token_id,
                f"{repr_} ({token_id:0>6}…)",
                admin.customer,
                changes,
            )
        actor = rng.choice(self.managers(customer.path))
        if kind == "customer":
            if action == "customer.update":
                if rng.random() < 0.3:
                    old = customer.name.rsplit(" ", 1)
                    changes = {
                        "before": {"name": f"{old[0]} (old) {old[-1]}"},
                        "after": {"name": customer.name},
                    }
                else:
                    changes = {"before": {"notes": self.notes()}, "after": {"notes": self.notes()}}
            elif action == "customer.create":
                changes = {
                    "before": {},
                    "after": {"name": customer.name, "notes": self.notes(), "is_active": True},
                }
            elif action == "customer.move":
                changes = {"before": {"parent": 1}, "after": {"parent": customer.id}}
            else:
                active = action == "customer.enable"
                changes = {"before": {"is_active": not active}, "after": {"is_active": active}}
            return actor, "tenants.customer", str(customer.id), customer.name, customer, changes
        if kind == "administrator":
            target = admin
            customer = target.customer
            actor = rng.choice(self.managers(customer.path))
            if action == "administrator.create":
                changes = {
                    "before": {},
                    "after": {
                        "username": target.username,
                        "full_name": target.full_name,
                        "permissions": list(target.permissions),
                    },
                }
            elif action == "administrator.update":
                changes = {
                    "before": {"email": f"old.{target.username}@bench.example"},
                    "after": {"email": f"{target.username}@bench.example"},
                }
            else:
                changes = {"before": {}, "after": {}}
            return (
                actor,
                "tenants.administrator",
                str(target.id),
                target.username,
                customer,
                changes,
            )
        local = (
            f"{rng.choice(['anna', 'ivan', 'info', 'sales', 'office', 'hr'])}{rng.randint(1, 400)}"
        )
        address = f"{local}@{customer.slug}.example"
        if kind == "mailbox":
            quota = rng.choice([1024, 2048, 5120, 10240])
            if action == "mailbox.update":
                changes = {
                    "before": {"quota_mb": quota // 2, "notes": self.notes()},
                    "after": {"quota_mb": quota, "notes": self.notes()},
                }
            elif action == "mailbox.create":
                changes = {"before": {}, "after": {"address": address, "quota_mb": quota}}
            else:
                changes = {"before": {"address": address}, "after": {}}
            return actor, "mail.mailbox", str(rng.randint(1, 2_000_000)), address, customer, changes
        if kind == "domain":
            return (
                actor,
                "mail.domain",
                str(customer.id),
                f"{customer.slug}.example",
                customer,
                {"before": {}, "after": {"name": f"{customer.slug}.example"}},
            )
        subject = " ".join(rng.choices(NOTE_WORDS, k=3))
        return (
            actor,
            "spamhold.heldmessage",
            str(rng.randint(1, 5_000_000)),
            f"{subject} → {address}",
            customer,
            {"before": {"status": "ONHOLD"}, "after": {"status": action.split(".")[1]}},
        )

    def template(self, action: str, customer: Cust, admin: Admin, rare: bool = False) -> Template:
        """One event, pre-encoded: everything of a record except seq, time, channel, IP and
        request id, which vary per record."""
        actor, object_type, object_id, object_repr, customer_, changes = self.event(
            action, customer, admin
        )
        if rare:
            changes = {**changes, "after": {**changes["after"], "notes": f"{RARE_WORD} trip"}}
        object_repr = object_repr[:300]
        actor_id = actor.id if actor else None
        actor_name = actor.audit_name if actor is not None else "system"
        customer_id = customer_.id if customer_ else None
        # The canonical JSON of chain.canonical has sorted keys; the varying values
        # (channel, request_id, seq, source_ip, timestamp) are spliced in between.
        head = _CANONICAL(
            {"action": action, "actor_id": actor_id, "actor_name": actor_name, "changes": changes}
        )[:-1]
        middle = _CANONICAL(
            {
                "customer_id": customer_id,
                "object_id": object_id,
                "object_repr": object_repr,
                "object_type": object_type,
            }
        )[1:-1]
        text = search_text(action, actor_name, object_type, object_repr, object_id, changes)
        before_ip = f"{copy_text(actor_id)}\t{copy_text(actor_name)}"
        after_request = "\t".join(
            map(
                copy_text,
                (
                    action,
                    object_type,
                    object_id,
                    object_repr,
                    customer_id,
                    customer_.path if customer_ else "",
                    _DUMPS(changes),
                    text,
                ),
            )
        )
        return Template(head, middle, before_ip, after_request)

    def templates(self, count: int) -> list[Template]:
        rng = self.rng
        actions = rng.choices([a for a, _ in ACTIONS], weights=[w for _, w in ACTIONS], k=count)
        customers = rng.choices(self.customers, cum_weights=self.customer_cum, k=count)
        admins = rng.choices(self.admins, cum_weights=self.admin_cum, k=count)
        return [self.template(*args) for args in zip(actions, customers, admins, strict=True)]

    def records(
        self,
        total: int,
        end: datetime.datetime,
        rare: set[int],
        state: dict[str, Any],
        focus: str = "/",
    ) -> Iterator[bytes]:
        """COPY text of records 1..total with their hash chain, in chunks.

        Events are drawn from a pool of pre-encoded templates (one per ~20 records), so the
        per-record work is a few string splices and one SHA-256; ``state`` receives the
        last seq and hash. Records in ``rare`` get an event of their own carrying RARE_WORD,
        one in five of them for a customer under ``focus`` (the measured subtree).
        """
        rng = self.rng
        pool = self.templates(max(1, min(total, total // 20 + 1000)))
        picks = rng.choices(pool, k=total)
        channels = rng.choices([c for c, _ in CHANNELS], weights=[w for _, w in CHANNELS], k=total)
        focused = [c for c in self.customers if c.path.startswith(focus)] or self.customers
        for n, seq in enumerate(sorted(rare)):
            if 1 <= seq <= total:
                kind = rng.choice(["customer.update", "mailbox.update", "customer.create"])
                customer = rng.choice(focused if n % 5 == 0 else self.customers)
                picks[seq - 1] = self.template(kind, customer, rng.choice(self.admins), rare=True)
        start = end - datetime.timedelta(days=365)
        step = (end - start) / total
        sha256 = hashlib.sha256
        getrandbits = rng.getrandbits
        prev = chain.GENESIS
        out: list[str] = []
        for seq in range(1, total + 1):
            t = picks[seq - 1]
            channel = channels[seq - 1]
            ts = (start + step * seq).isoformat()
            rid = f"{getrandbits(128):032x}"
            if channel in _IP_CHANNELS:
                r = getrandbits(24)
                ip = f"10.{r >> 16}.{(r >> 8) & 255}.{r & 255}"
                ip_json = f'"{ip}"'
            else:
                ip, ip_json = "\\N", "null"
            canonical = (
                f'{t.head},"channel":"{channel}",{t.middle},"request_id":"{rid}","seq":{seq},'
                f'"source_ip":{ip_json},"timestamp":"{ts}"}}'
            )
            digest = sha256(prev.encode() + b"\n" + canonical.encode()).hexdigest()
            out.append(
                f"{seq}\t{seq}\t{ts}\t{t.before_ip}\t{ip}\t{channel}\t{rid}\t"
                f"{t.after_request}\t{prev}\t{digest}\t{seq}\t{seq - 1}\n"
            )
            prev = digest
            if len(out) == 10_000:
                yield "".join(out).encode()
                out = []
        if out:
            yield "".join(out).encode()
        state["last_seq"], state["last_hash"] = total, prev


@dataclass(frozen=True)
class Template:
    head: str  # canonical JSON up to "changes" included, without the closing brace
    middle: str  # canonical JSON from "customer_id" to "object_type", without braces
    before_ip: str  # COPY text of actor_id, actor_name
    after_request: str  # COPY text of action .. search_text


# chain.canonical's encoding, built once; and the encoding of the changes column.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
_DUMPS = json.JSONEncoder(ensure_ascii=False).encode
_IP_CHANNELS = frozenset({"portal", "api"})
# COPY text format: backslash, tab, newline and carriage return are escaped, NULL is \N.
_COPY_ESCAPES = seeding.COPY_ESCAPES


def copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    return str(value)


def parse_copy_line(line: str) -> dict[str, Any]:
    """A COPY text line back to column values (for the self-check)."""
    unescape = {"\\\\": "\\", "\\t": "\t", "\\n": "\n", "\\r": "\r"}
    fields = line.rstrip("\n").split("\t")
    values: dict[str, Any] = {}
    for name, raw in zip(COLUMNS, fields, strict=True):
        if raw == "\\N":
            values[name] = None
            continue
        for escaped, plain in unescape.items():
            raw = raw.replace(escaped, plain)
        values[name] = raw
    for name in ("id", "seq", "actor_id", "customer_id", "chain_pos", "prev_seq"):
        if values[name] is not None:
            values[name] = int(values[name])
    values["timestamp"] = datetime.datetime.fromisoformat(values["timestamp"])
    values["changes"] = json.loads(values["changes"])
    return values


def load_population() -> tuple[list[Cust], list[Admin]]:
    customers = []
    by_id = {}
    for pk, path, name in Customer.objects.order_by("id").values_list("id", "path", "name"):
        slug = "-".join(name.lower().split()[:2]) + f"-{pk}"
        cust = Cust(pk, path, name, slug)
        customers.append(cust)
        by_id[pk] = cust
    admins = [
        Admin(
            pk,
            username,
            full_name,
            by_id[customer_id],
            tuple(permissions or ()),
            f"{full_name} <{username}>" if full_name else username,
        )
        for pk, username, full_name, customer_id, permissions in Administrator.objects.order_by(
            "id"
        ).values_list("id", "username", "full_name", "customer_id", "permissions")
    ]
    if not customers or not admins:
        raise RuntimeError("seed the tenants before the audit records")
    return customers, admins


def self_check(customers: list[Cust], admins: list[Admin], end: datetime.datetime) -> None:
    """Generated search text and hashes must equal what the model itself computes."""
    generator = Generator(random.Random(0), customers, admins)
    state: dict[str, Any] = {}
    text = b"".join(generator.records(500, end, {7}, state)).decode()
    prev = chain.GENESIS
    for line in text.splitlines():
        values = parse_copy_line(line)
        record = AuditRecord(**values)
        if record.build_search_text() != record.search_text:
            raise RuntimeError(f"search_text differs from the model's for seq {record.seq}")
        if record.prev_hash != prev:
            raise RuntimeError(f"seq {record.seq} does not link to the previous record")
        if chain.compute_hash(prev, record.hashed_values()) != record.hash:
            raise RuntimeError(f"hash differs from the model's for seq {record.seq}")
        prev = record.hash


def check_loaded(count: int) -> None:
    """Records read back through the ORM verify: COPY text, types and chain survived."""
    ranges = [(1, min(count, 2000)), (max(1, count - 999), count)]
    for low, high in ranges:
        prev = None
        for record in AuditRecord.objects.filter(seq__gte=low, seq__lte=high).order_by("seq"):
            if prev is not None and record.prev_hash != prev:
                raise RuntimeError(f"seeded chain broken at seq {record.seq}")
            if chain.compute_hash(record.prev_hash, record.hashed_values()) != record.hash:
                raise RuntimeError(f"seeded record {record.seq} does not verify")
            # jsonb reorders keys, so the rebuilt text may list the changes in another order.
            if sorted(record.build_search_text().split()) != sorted(record.search_text.split()):
                raise RuntimeError(f"seeded record {record.seq} has a different search_text")
            prev = record.hash


def wanted_info(records: int, tenants_generation: str, seed: int) -> dict:
    return {"version": VERSION, "records": records, "tenants": tenants_generation, "seed": seed}


def is_seeded(wanted: dict) -> dict | None:
    info = seeding.read_info(INFO_KEY)
    if not info or any(info.get(k) != v for k, v in wanted.items()):
        return None
    # Token use during earlier runs appends a few records; fewer than seeded means damage.
    if not AuditRecord.objects.filter(seq=wanted["records"]).exists():
        return None
    return info


def seed(
    *, records: int, tenants_generation: str, seed: int, force: bool, focus: str = "/"
) -> dict:
    seeding.ensure_info_table()
    wanted = wanted_info(records, tenants_generation, seed)
    if not force:
        info = is_seeded(wanted)
        if info is not None:
            return {**info, "skipped": True}
    timings: dict[str, float] = {}
    started = time.perf_counter()
    customers, admins = load_population()
    end = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    self_check(customers, admins, end)
    rare_count = max(3, records // 40_000)
    rare = set(random.Random(seed).sample(range(1, records + 1), min(rare_count, records)))
    table = AuditRecord._meta.db_table
    state = {"last_seq": 0, "last_hash": chain.GENESIS}
    with transaction.atomic():
        seeding.delete_info(INFO_KEY)
        with connection.cursor() as cursor:
            # TRUNCATE fires no row triggers: the append-only trigger guards UPDATE/DELETE.
            cursor.execute(f"TRUNCATE {table}, {AuditChainHead._meta.db_table} RESTART IDENTITY")
        with seeding.indexes_dropped(table, timings) as dropped:
            t0 = time.perf_counter()
            generator = Generator(random.Random(seed + 1), customers, admins)
            chunks = generator.records(records, end, rare, state, focus)
            seeding.copy_text(AuditRecord, COLUMNS, chunks, freeze=True)
            timings["copy"] = round(time.perf_counter() - t0, 2)
        if state["last_seq"] != records:
            raise RuntimeError(f"generated {state['last_seq']} records, not {records}")
        check_loaded(records)
        seeding.reset_sequences(AuditRecord, AuditChainHead)
        AuditChainHead.objects.update_or_create(
            pk=1,
            defaults={
                "last_seq": state["last_seq"],
                "last_hash": state["last_hash"],
                "last_pos": state["last_seq"],
            },
        )
        with connection.cursor() as cursor:  # new appends number after the seeded records
            cursor.execute("SELECT setval('audit_record_seq', %s)", [state["last_seq"]])
        info = {
            **wanted,
            "rare_word": RARE_WORD,
            "rare_planted": len(rare),
            "common_word": COMMON_WORD,
            "rebuilt_indexes": dropped,
        }
        seeding.write_info(INFO_KEY, info)
    t0 = time.perf_counter()
    seeding.analyze(table, AuditChainHead._meta.db_table, vacuum=True)
    timings["vacuum analyze"] = round(time.perf_counter() - t0, 2)
    timings["total"] = round(time.perf_counter() - started, 2)
    info["timings"] = timings  # kept, so later runs can report how long seeding took
    seeding.write_info(INFO_KEY, info)
    return {**info, "skipped": False}
