"""The installed licence as it stands now: verified again on every read, with its use.

Use is counted from what the product holds (models looked up through the app registry, so
``licensing`` imports no app and ``mail`` / ``tenants`` may import it):

* ``users``: mailboxes, enabled or not (a disabled mailbox keeps its mail and can be
  enabled again at any time without a licence check);
* ``organisations``: customers below the top level (the top-level customers are the
  licensee's own organisation);
* ``storage_gb``: the sum of mailbox quotas, i.e. storage allocated, in GB.

Mailbox figures are sums over ``mail.MailUsage`` (one row per customer, kept in step by
every create and delete), not scans of the mailboxes.
"""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass, field

from django.apps import apps
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from . import document, keys
from .models import InstalledLicence

UNLICENSED, VALID, EXPIRED, INVALID = "unlicensed", "valid", "expired", "invalid"
WARN_DAYS = 30
WARN_PERCENT = 90


@dataclass
class Status:
    state: str
    licence: document.Licence | None = None
    installed: InstalledLicence | None = None
    error: str = ""
    now: datetime.datetime = field(default_factory=timezone.now)
    used: int = 0  # in the model's unit (MB for storage_gb)

    @property
    def enforcing(self) -> bool:
        """A licence is installed (valid or not): billable creates are checked."""
        return self.state != UNLICENSED

    @property
    def capacity(self) -> int:
        """The limit in the unit ``used`` is counted in."""
        if self.licence is None:
            return 0
        unit = 1024 if self.licence.model == document.STORAGE_GB else 1
        return self.licence.limit * unit

    @property
    def used_display(self) -> float | int:
        """Use in the licence's own unit (GB with one decimal for storage)."""
        if self.licence is not None and self.licence.model == document.STORAGE_GB:
            return round(self.used / 1024, 1)
        return self.used

    @property
    def percent(self) -> int | None:
        if self.licence is None:
            return None
        return int(100 * self.used / self.capacity)

    @property
    def days_left(self) -> int | None:
        return self.licence.days_left(self.now) if self.licence is not None else None

    @property
    def expiring_soon(self) -> bool:
        return self.state == VALID and (self.days_left or 0) <= WARN_DAYS

    @property
    def near_limit(self) -> bool:
        return self.licence is not None and (self.percent or 0) >= WARN_PERCENT

    @property
    def over_limit(self) -> bool:
        return self.licence is not None and self.used >= self.capacity


def usage(model: str) -> int:
    """Current use under ``model`` (MB for storage_gb)."""
    if model == document.ORGANISATIONS:
        customers = apps.get_model("tenants", "Customer")._default_manager
        return customers.filter(parent__isnull=False).count()
    column = "mailboxes" if model == document.USERS else "quota_mb"
    total = apps.get_model("mail", "MailUsage")._default_manager.aggregate(n=Sum(column))["n"]
    return int(total or 0)


def _newest(lock: bool) -> InstalledLicence | None:
    """The newest installed row, read on every call (a licence change counts on the next
    request). Every billable create reads it, so the statement is written once instead of
    compiled each time (issue 19); the queryset when a column would need a conversion."""
    sql = _newest_sql()
    if sql is None:
        rows = InstalledLicence.objects.order_by("-id")
        return (rows.select_for_update() if lock else rows).first()
    with connection.cursor() as cursor:
        cursor.execute(sql + (" FOR UPDATE" if lock else ""))
        found = cursor.fetchone()
    if found is None:
        return None
    names = [f.attname for f in InstalledLicence._meta.concrete_fields]
    return InstalledLicence.from_db(connection.alias, names, found)


@functools.cache
def _newest_sql() -> str | None:
    meta = InstalledLicence._meta
    if any(f.get_db_converters(connection) for f in meta.concrete_fields):
        return None
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in meta.concrete_fields)
    pk = quote(meta.pk.column)
    return f"SELECT {columns} FROM {quote(meta.db_table)} ORDER BY {pk} DESC LIMIT 1"  # noqa: S608


def current(*, lock: bool = False, count: bool = True) -> Status:
    """The newest installed licence, verified now; ``lock`` holds its row to commit.

    Holding the row makes concurrent billable creates queue, so each one counts what the
    previous committed and a limit cannot be overshot by a race.
    """
    now = timezone.now()
    row = _newest(lock)
    if row is None:
        return Status(state=UNLICENSED, now=now)
    try:
        licence = document.verify(row.text, keys.accepted_keys())
    except document.LicenceError as exc:
        return Status(state=INVALID, installed=row, error=exc.message, now=now)
    status = Status(
        state=EXPIRED if licence.is_expired(now) else VALID,
        licence=licence,
        installed=row,
        now=now,
    )
    if count:
        status.used = usage(licence.model)
    return status
