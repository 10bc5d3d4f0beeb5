"""Usage reports read from the daily snapshots: a customer's subtree over a period, by day
or by child customer. One indexed query each, whatever the size of the subtree.

* ``day``: the customer's subtree figures (``tree_*``) on each day of the period;
* ``child``: one line per child customer (its subtree) and one for the customer's own
  holdings, each with the average and the peak over the days of the period: the lines add
  up to the customer's subtree. Children are those of each day (``parent_id_at_day``), so a
  customer moved during the month is billed where it was.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from django.db import connection
from django.template.defaultfilters import filesizeformat
from django.utils import formats
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from tenants.models import Customer

from .models import FIGURES, DailyUsage

DAY, CHILD = "day", "child"
OWN = "own"
GROUPS = (DAY, CHILD)
MAX_DAYS = 3 * 366
# Column titles of the portal table.
SHOWN = {
    "mailboxes": gettext_lazy("Mailboxes"),
    "aliases": gettext_lazy("Aliases"),
    "domains": gettext_lazy("Domains"),
    "quota_mb": gettext_lazy("Allocated"),
    "used_bytes": gettext_lazy("Used"),
    "held_messages": gettext_lazy("Held mail"),
    "files_bytes": gettext_lazy("Cloud files"),
    "files_users": gettext_lazy("Cloud users"),
    "chat_users": gettext_lazy("Chat users"),
}
CHART_DEFAULT = "used_bytes"


def display(name: str, value: int) -> str:
    """A figure as the portal shows it (sizes in GB or bytes units, counts grouped)."""
    if name == "quota_mb":
        return _("%(gb)s GB") % {"gb": formats.number_format(round(value / 1024, 1), 1)}
    if name.endswith("_bytes"):
        return str(filesizeformat(value))
    return formats.number_format(value, force_grouping=True)


@dataclass
class Line:
    """One line of a report: a day, or a customer (a child, or the customer itself)."""

    key: str  # the day (ISO) or the customer id
    label: str
    days: int
    average: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)


def by_day(customer: Customer, start: datetime.date, end: datetime.date) -> list[Line]:
    rows = (
        DailyUsage.objects.filter(customer=customer, day__range=(start, end))
        .order_by("day")
        .values("day", *(f"tree_{n}" for n in FIGURES))
    )
    lines = []
    for row in rows:
        values = {n: row[f"tree_{n}"] for n in FIGURES}
        lines.append(Line(row["day"].isoformat(), row["day"].isoformat(), 1, values, values))
    return lines


def by_child(customer: Customer, start: datetime.date, end: datetime.date) -> list[Line]:
    table = DailyUsage._meta.db_table
    aggregates = ", ".join(
        f"ROUND(AVG(tree_{n}))::bigint, MAX(tree_{n})"  # children: their subtree
        for n in FIGURES
    )
    own = ", ".join(f"ROUND(AVG(own_{n}))::bigint, MAX(own_{n})" for n in FIGURES)
    # Table and column names come from the model; every value is a parameter.
    sql = (
        f"SELECT customer_id, COUNT(*), {aggregates} FROM {table} "  # noqa: S608
        "WHERE parent_id_at_day = %s AND day BETWEEN %s AND %s GROUP BY customer_id "
        f"UNION ALL SELECT -customer_id, COUNT(*), {own} FROM {table} "
        "WHERE customer_id = %s AND day BETWEEN %s AND %s GROUP BY customer_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [customer.pk, start, end, customer.pk, start, end])
        rows = cursor.fetchall()
    names = dict(
        Customer.objects.filter(pk__in=[abs(r[0]) for r in rows]).values_list("pk", "name")
    )
    lines = []
    for row in rows:
        pk, days, values = row[0], row[1], row[2:]
        average = {n: int(values[2 * i] or 0) for i, n in enumerate(FIGURES)}
        peak = {n: int(values[2 * i + 1] or 0) for i, n in enumerate(FIGURES)}
        label = names.get(abs(pk), str(abs(pk)))
        if pk < 0:
            key, label = OWN, _("%(name)s itself") % {"name": label}
        else:
            key = str(pk)
        lines.append(Line(key, label, days, average, peak))
    # The customer's own line last, the children by name.
    lines.sort(key=lambda line: (line.key == OWN, line.label.lower()))
    return lines


def build(customer: Customer, start: datetime.date, end: datetime.date, group: str) -> list[Line]:
    return by_day(customer, start, end) if group == DAY else by_child(customer, start, end)


def csv_header(group: str) -> list[str]:
    if group == DAY:
        return ["day", *FIGURES]
    return [
        "customer",
        "name",
        "days",
        *(f"{kind}_{n}" for n in FIGURES for kind in ("average", "peak")),
    ]


def csv_rows(lines: list[Line], group: str) -> list[list[object]]:
    if group == DAY:
        return [[line.key, *(line.average[n] for n in FIGURES)] for line in lines]
    return [
        [
            line.key,
            line.label,
            line.days,
            *(v for n in FIGURES for v in (line.average[n], line.peak[n])),
        ]
        for line in lines
    ]


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


def chart(lines: list[Line], figure: str = "used_bytes") -> list[Bar]:
    """Bars of one figure for the page's SVG chart (viewBox 0 0 1000 200): columns per day,
    or one column per line (children, then the customer itself)."""
    if not lines:
        return []
    top = max(line.average[figure] for line in lines) or 1
    step = 1000 / len(lines)
    gap = min(step * 0.2, 8)
    bars = []
    for i, line in enumerate(lines):
        height = 190 * line.average[figure] / top
        title = f"{line.label}: {display(figure, line.average[figure])}"
        bars.append(Bar(round(i * step + gap / 2, 2), round(200 - height, 2),
                        round(step - gap, 2), round(height, 2), title))  # fmt: skip
    return bars
