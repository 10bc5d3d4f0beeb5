"""Seed the customer tree and the administrators with COPY, reproducibly from a random seed.

The tree is built level by level (depth 0 is the provider at the root, ``levels`` levels in
all). Each level's size follows a share of the total, and each node picks its parent with a
log-normal weight, so fan-out is skewed the way real trees are: a few large resellers and
ministries, many small businesses and departments, leaves at every depth.
"""

from __future__ import annotations

import datetime
import json
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field

from django.contrib.auth.hashers import make_password
from django.db import connection, transaction

from tenants import permissions as perms
from tenants.models import Administrator, ApiToken, Customer

from . import seeding

INFO_KEY = "tenants"
VERSION = 1
ROOT_USERNAME = "bench.root"
MID_USERNAME = "bench.mid"
PASSWORD = "bench-password-not-a-secret"

# Share of the customers at depth 1..7; depth 0 is the single root. Scaled to the total.
LEVEL_SHARES = [0.0012, 0.0088, 0.045, 0.125, 0.22, 0.30, 0.30]
LEVEL_KINDS = [
    "Provider",
    "Region",
    "Ministry",
    "Department",
    "Division",
    "Office",
    "Team",
    "Unit",
]
ADJECTIVES = seeding.words(
    "Northern Southern Eastern Western Central Coastal Highland Lowland Golden Silver Green "
    "Blue Red Royal National Municipal Federal Regional Urban Rural Digital Global Civic "
    "Public Private United Pacific Atlantic Alpine Steppe Desert River Lake Forest Mountain "
    "Valley Harbor Summit Polar"
)
NOUNS = seeding.words(
    "Logistics Finance Health Education Energy Transport Agriculture Justice Defence "
    "Culture Tourism Telecom Water Mining Trade Housing Labour Science Sports Media "
    "Insurance Retail Pharmacy Clinic School Library Archive Registry Customs Statistics "
    "Forestry Fisheries Railways Aviation Shipping Textiles Bakery Dairy Brewery Software"
)
FIRST_NAMES = seeding.words(
    "Anna Boris Chen Dmitri Elena Farida Georg Hana Ivan Julia Karim Lena Mikhail Nadia "
    "Oleg Priya Quentin Rosa Sergei Tamar Ulan Vera Wang Xenia Yusuf Zara Bat Saran Tuya "
    "Munkh"
)
LAST_NAMES = seeding.words(
    "Ivanova Petrov Smirnova Kuznetsov Popova Sokolov Lebedeva Kozlov Novikova Morozov Bold "
    "Ganbaatar Erdene Batbayar Tsogt Dorj Chen Garcia Muller Rossi Dubois Silva Kim Tanaka "
    "Nowak Horvat Jensen Novak Larsen"
)
# Permission sets handed out below the two benchmark administrators.
PERMISSION_PROFILES = [
    list(perms.ALL),
    [perms.CUSTOMERS_VIEW, perms.ADMINISTRATORS_VIEW, perms.AUDIT_VIEW, perms.TOKENS_MANAGE],
    [perms.CUSTOMERS_VIEW, perms.CUSTOMERS_MANAGE, perms.MAIL_VIEW, perms.MAIL_MANAGE],
    [perms.MAIL_VIEW, perms.MAIL_MANAGE, perms.SPAMHOLD_VIEW, perms.SPAMHOLD_RELEASE],
    [perms.CUSTOMERS_VIEW, perms.AUDIT_VIEW],
    [perms.SPAMHOLD_VIEW, perms.SPAMHOLD_READ_CONTENT, perms.SPAMHOLD_RELEASE],
]
# Administrators per depth (relative), most of them in the middle of the tree.
ADMIN_DEPTH_WEIGHTS = [2, 12, 40, 80, 110, 110, 90, 56]


@dataclass
class Node:
    id: int
    parent: int | None
    depth: int
    name: str
    path: str
    children: list[int] = field(default_factory=list)


@dataclass
class TreeStats:
    mid_customer_id: int
    mid_subtree: int
    depth_counts: dict[int, int]
    max_fanout: int


def level_sizes(total: int, levels: int) -> list[int]:
    """How many customers sit at each depth, summing to ``total``."""
    if total < levels:
        raise ValueError(f"{total} customers cannot fill {levels} levels")
    shares = LEVEL_SHARES[: levels - 1]
    scale = sum(shares)
    sizes = [1] + [max(1, round((total - 1) * s / scale)) for s in shares]
    sizes[-1] += total - sum(sizes)
    if sizes[-1] < 1:
        raise ValueError(f"cannot spread {total} customers over {levels} levels")
    return sizes


def build_tree(total: int, levels: int, rng: random.Random) -> list[Node]:
    nodes = [Node(1, None, 0, "Bench Provider", "/1/")]
    previous = [nodes[0]]
    next_id = 2
    for depth, size in enumerate(level_sizes(total, levels)[1:], start=1):
        # A log-normal weight per possible parent: a few big parents, many small or empty.
        weights = [rng.lognormvariate(0, 1.3) for _ in previous]
        parents = rng.choices(previous, weights=weights, k=size)
        parents.sort(key=lambda n: n.id)
        current = []
        for parent in parents:
            kind = LEVEL_KINDS[depth % len(LEVEL_KINDS)]
            # The sibling number keeps names unique among siblings (case-insensitively).
            number = len(parent.children) + 1
            name = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {kind} {number}"
            node = Node(next_id, parent.id, depth, name, f"{parent.path}{next_id}/")
            parent.children.append(next_id)
            nodes.append(node)
            current.append(node)
            next_id += 1
        previous = current
    return nodes


def subtree_sizes(nodes: list[Node]) -> dict[int, int]:
    sizes: Counter[int] = Counter()
    for node in nodes:
        for part in node.path.strip("/").split("/"):
            sizes[int(part)] += 1
    return dict(sizes)


def choose_mid(nodes: list[Node], sizes: dict[int, int]) -> Node:
    """A customer in the middle of the tree (depth 3, else 4) with hundreds below it."""
    for depth in (3, 4, 2, 5):
        candidates = [n for n in nodes if n.depth == depth and 150 <= sizes[n.id] <= 1500]
        if candidates:
            return min(candidates, key=lambda n: (abs(sizes[n.id] - 400), n.id))
    middle = [n for n in nodes if 0 < n.depth < 6] or nodes
    return max(middle, key=lambda n: (sizes[n.id], -n.id))


def customer_rows(nodes: list[Node], now: datetime.datetime, rng: random.Random):
    notes = ["", "", "", "Framework contract", "Invoiced quarterly", "Pilot customer"]
    for node in nodes:
        created = now - datetime.timedelta(days=400 - node.depth * 10, seconds=node.id)
        # A few disabled leaves at the bottom of the tree, as in real life.
        active = not (node.depth >= 6 and not node.children and rng.random() < 0.02)
        yield (
            node.id,
            node.name,
            node.parent,
            node.path,
            node.depth,
            active,
            rng.choice(notes),
            created,
            created,
        )


CUSTOMER_COLUMNS = (
    "id",
    "name",
    "parent_id",
    "path",
    "depth",
    "is_active",
    "notes",
    "created_at",
    "updated_at",
)
ADMIN_COLUMNS = (
    "id",
    "password",
    "last_login",
    "username",
    "full_name",
    "email",
    "customer_id",
    "customer_path",
    "permissions",
    "is_active",
    "language",
    "created_at",
)


def admin_rows(nodes: list[Node], mid: Node, count: int, now: datetime.datetime, rng):
    password = make_password(PASSWORD)  # one Argon2 hash, reused by every account
    by_depth: dict[int, list[Node]] = {}
    for node in nodes:
        by_depth.setdefault(node.depth, []).append(node)
    depths = sorted(by_depth)
    weights = [ADMIN_DEPTH_WEIGHTS[min(d, len(ADMIN_DEPTH_WEIGHTS) - 1)] for d in depths]
    everything = json.dumps(list(perms.ALL))
    yield (
        1,
        password,
        None,
        ROOT_USERNAME,
        "Bench Root",
        "root@bench.example",
        1,
        "/1/",
        everything,
        True,
        "",
        now,
    )
    if count >= 2:
        yield (
            2,
            password,
            None,
            MID_USERNAME,
            "Bench Middle",
            "mid@bench.example",
            mid.id,
            mid.path,
            everything,
            True,
            "",
            now,
        )
    for admin_id in range(3, count + 1):
        depth = rng.choices(depths, weights=weights)[0]
        home = rng.choice(by_depth[depth])
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        username = f"{first}.{last}.{admin_id}".lower()
        profile = PERMISSION_PROFILES[0] if depth <= 1 else rng.choice(PERMISSION_PROFILES)
        yield (
            admin_id,
            password,
            now - datetime.timedelta(hours=rng.randint(1, 2000)) if rng.random() < 0.8 else None,
            username,
            f"{first} {last}",
            f"{username}@bench.example",
            home.id,
            home.path,
            json.dumps(perms.normalise(profile)),
            rng.random() > 0.03,
            rng.choice(["", "", "en", "ru", "mn"]),
            now - datetime.timedelta(days=rng.randint(1, 700)),
        )


def wanted_info(customers: int, admins: int, levels: int, seed: int) -> dict:
    return {
        "version": VERSION,
        "customers": customers,
        "admins": admins,
        "levels": levels,
        "seed": seed,
    }


def is_seeded(wanted: dict) -> dict | None:
    info = seeding.read_info(INFO_KEY)
    if not info or any(info.get(k) != v for k, v in wanted.items()):
        return None
    if Customer.objects.count() != wanted["customers"]:
        return None
    if Administrator.objects.filter(username__in=[ROOT_USERNAME, MID_USERNAME]).count() != 2:
        return None
    return info


def seed(*, customers: int, admins: int, levels: int, seed: int, force: bool) -> dict:
    """Seed tenants unless the same sizes are already there; returns the stored info."""
    seeding.ensure_info_table()
    wanted = wanted_info(customers, admins, levels, seed)
    if not force:
        info = is_seeded(wanted)
        if info is not None:
            return {**info, "skipped": True}
    if admins < 2:
        raise ValueError("at least 2 administrators are needed (root and middle)")
    rng = random.Random(seed)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    nodes = build_tree(customers, levels, rng)
    sizes = subtree_sizes(nodes)
    mid = choose_mid(nodes, sizes)
    with transaction.atomic():
        seeding.delete_info(INFO_KEY)
        seeding.delete_info("audit")  # audit rows point at these customers: reseed them too
        tables = [m._meta.db_table for m in (ApiToken, Administrator, Customer)]
        with connection.cursor() as cursor:
            # CASCADE empties every table that references customers or administrators
            # (sessions of other apps' models); this is a benchmark-only database.
            cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
        seeding.copy_rows(Customer, CUSTOMER_COLUMNS, customer_rows(nodes, now, rng))
        seeding.copy_rows(Administrator, ADMIN_COLUMNS, admin_rows(nodes, mid, admins, now, rng))
        seeding.reset_sequences(Customer, Administrator, ApiToken)
        info = {
            **wanted,
            "generation": uuid.uuid4().hex,
            "mid_customer_id": mid.id,
            "mid_customer_path": mid.path,
            "mid_customer_depth": mid.depth,
            "mid_subtree_customers": sizes[mid.id],
            "depth_counts": dict(Counter(n.depth for n in nodes)),
            "max_fanout": max(len(n.children) for n in nodes),
        }
        seeding.write_info(INFO_KEY, info)
    seeding.analyze(Customer._meta.db_table, Administrator._meta.db_table)
    return {**info, "skipped": False}
