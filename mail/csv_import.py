"""Bulk CSV import of mailboxes, aliases and groups, and CSV export safe from formulas.

Import columns (header row required, any order, unknown columns refused)::

    type,address,display_name,password,quota_mb,targets,enabled

``type`` is mailbox, alias or group; ``targets`` (aliases and groups) are separated by
spaces, commas or semicolons. ``password`` is a plain password (stored encrypted and hashed
after the import committed, see :mod:`mail.activation`) or, from a migration, a SHA512-CRYPT
hash (``{SHA512-CRYPT}$6$...`` or ``$6$...``, checked strictly by
:func:`mail.passwords.imported_hash`, stored as it is). A dry run validates every row
exactly as the actions would and lists each row's errors; nothing is written. Applying
stores the upload encrypted (:class:`mail.models.CsvImport`, it holds passwords), and one
job (``mail.csv_import``)
validates again and writes every row, the limit counters, the audit record and the upload's
status in ONE transaction: any error (a limit met meanwhile, a taken address, a constraint or
trigger of the database) and nothing changes; the job then says so in one human sentence.
Telling the nodes happens after the commit and can no longer fail a job that wrote its rows.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DatabaseError, connection, models, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from licensing import enforce as licence
from tenants import permissions as perms
from tenants.limits import ResourceLimit
from tenants.models import Customer
from ums import auditing, jobs, scoping
from ums.actions import action, require_in_scope, require_permission
from ums.csvsafe import stream_rows

from . import actions, activation, choices, limits, passwords, validators
from .models import Alias, CsvImport, Domain, Mailbox
from .signals import announce

COLUMNS = ("type", "address", "display_name", "password", "quota_mb", "targets", "enabled")
REQUIRED = ("type", "address")
MAX_ROWS = 100_000
MAX_BYTES = 20 * 1024 * 1024
JOB_KIND = "mail.csv_import"
_SPLIT = re.compile(r"[\s,;]+")
logger = logging.getLogger(__name__)
_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}


@dataclass
class Row:
    number: int
    kind: str = ""
    local_part: str = ""
    domain: Domain | None = None
    email: str = ""
    password: str = field(default="", repr=False)
    # The password column held a SHA512-CRYPT hash (a migration): stored as it is.
    password_hash: str = field(default="", repr=False)
    fields: dict[str, Any] = field(default_factory=dict)
    targets: list[str] = field(default_factory=list)
    errors: dict[str, list[str]] = field(default_factory=dict)

    def fail(self, key: str, message: str | list[str]) -> None:
        messages = message if isinstance(message, list) else [message]
        self.errors.setdefault(key, []).extend(str(m) for m in messages)


@dataclass
class Plan:
    rows: list[Row]
    errors: list[dict[str, Any]]  # file-level problems: {"row": 0, "errors": {...}}

    @property
    def ok(self) -> bool:
        return not self.errors and not any(r.errors for r in self.rows)

    def report(self, limit: int | None = None) -> dict[str, Any]:
        bad = [
            {"row": r.number, "address": r.email, "errors": r.errors} for r in self.rows if r.errors
        ]
        problems = self.errors + bad
        counts = Counter(r.kind for r in self.rows)
        return {
            "valid": self.ok,
            "rows": len(self.rows),
            "mailboxes": counts.get("mailbox", 0),
            "aliases": counts.get(choices.ALIAS, 0),
            "groups": counts.get(choices.GROUP, 0),
            "error_count": len(problems),
            "errors": problems if limit is None else problems[:limit],
        }


def decode(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    if len(data) > MAX_BYTES:
        raise ValidationError({"file": _("The file is larger than 20 MB.")})
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError({"file": _("The file must be UTF-8 text.")}) from exc


def _records(text: str) -> tuple[list[str], list[list[str]]]:
    if "\x00" in text:
        raise ValidationError({"file": _("The file contains NUL bytes; is it really CSV?")})
    try:
        reader = csv.reader(io.StringIO(text))
        header = [h.strip().lower() for h in next(reader, [])]
        records = []
        for record in reader:
            if len(records) >= MAX_ROWS:
                raise ValidationError(
                    {"file": _("At most %(max)d rows per import.") % {"max": MAX_ROWS}}
                )
            if any(cell.strip() for cell in record):
                records.append(record)
    except csv.Error as exc:
        raise ValidationError({"file": _("Unreadable CSV: %(error)s") % {"error": exc}}) from exc
    if not header:
        raise ValidationError({"file": _("The file is empty.")})
    unknown = [h for h in header if h not in COLUMNS]
    missing = [h for h in REQUIRED if h not in header]
    if unknown or missing or len(set(header)) != len(header):
        raise ValidationError(
            {
                "file": _(
                    "The header must name columns from: %(columns)s (type and address "
                    "required, each once)."
                )
                % {"columns": ", ".join(COLUMNS)}
            }
        )
    return header, records


def _parse_row(number: int, values: dict[str, str], row: Row, fixed_domain: Domain | None) -> None:
    kind = values.get("type", "").strip().lower()
    if kind not in ("mailbox", choices.ALIAS, choices.GROUP):
        row.fail("type", _("Use mailbox, alias or group."))
    row.kind = kind
    address = values.get("address", "").strip()
    if fixed_domain is not None and "@" not in address:
        address = f"{address}@{fixed_domain.name}"
    if address.count("@") != 1:
        row.fail("address", _("Enter an address such as name@example.com."))
        return
    local, domain_name = address.rsplit("@", 1)
    try:
        row.local_part = validators.normalise_local_part(local)
    except ValidationError as exc:
        row.fail("address", exc.messages)
    try:
        row.email = f"{row.local_part}@{validators.normalise_domain(domain_name)[0]}"
    except ValidationError as exc:
        row.fail("address", exc.messages)
    enabled = values.get("enabled", "").strip().lower()
    if enabled:
        if enabled not in _TRUE | _FALSE:
            row.fail("enabled", _("Use true or false."))
        else:
            row.fields["is_enabled"] = enabled in _TRUE
    name = values.get("display_name", "")
    if kind == "mailbox":
        if name:
            row.fields["display_name"] = name
        quota = values.get("quota_mb", "").strip()
        if quota:
            if not quota.isdigit() or len(quota) > 9:
                row.fail("quota_mb", _("Enter a whole number of MB."))
            else:
                row.fields["quota_mb"] = int(quota)
        row.password = values.get("password", "")
        if not row.password:
            row.fail("password", _("A mailbox needs a password."))
        elif passwords.looks_like_hash(row.password):
            try:
                row.password_hash = passwords.imported_hash(row.password)
            except ValidationError as exc:
                row.fail("password", exc.messages)
            row.password = ""
        if values.get("targets", "").strip():
            row.fail("targets", _("Only aliases and groups have targets."))
    elif kind in (choices.ALIAS, choices.GROUP):
        row.fields["kind"] = kind
        if name:
            row.fields["name"] = name
        row.targets = [t for t in _SPLIT.split(values.get("targets", "").strip()) if t]
        if values.get("password") or values.get("quota_mb", "").strip():
            row.fail("password", _("Aliases and groups have no password or quota."))


def plan(data: bytes | str, *, actor: Any, domain: Domain | None = None) -> Plan:
    """Validate an upload completely; every row's problems, nothing written."""
    header, records = _records(decode(data))
    rows: list[Row] = []
    for number, record in enumerate(records, start=2):
        row = Row(number=number)
        if len(record) != len(header):
            row.fail("row", _("Expected %(n)d columns.") % {"n": len(header)})
            rows.append(row)
            continue
        _parse_row(number, dict(zip(header, record, strict=True)), row, domain)
        rows.append(row)
    _resolve_domains(rows, actor)
    _check_fields(rows)
    _check_addresses(rows)
    errors = _check_limits(rows, actor)
    _check_licence(rows)
    return Plan(rows=rows, errors=errors)


def _check_licence(rows: list[Row]) -> None:
    """Name each mailbox row the product licence refuses (those beyond its limit)."""
    mailboxes = [r for r in rows if r.kind == "mailbox" and r.domain is not None]
    amounts = [
        {"users": 1, "storage_mb": r.fields.get("quota_mb", r.domain.default_quota_mb)}
        for r in mailboxes
    ]
    for row, message in zip(mailboxes, licence.refusals(amounts), strict=True):
        if message:
            row.fail(licence.FIELD, message)


def _resolve_domains(rows: list[Row], actor: Any) -> None:
    names = {r.email.split("@", 1)[1] for r in rows if r.email}
    found = (
        {
            d.name: d
            for d in scoping.scope_queryset(
                Domain.objects.select_related("customer"), actor
            ).filter(name__in=names)
        }
        if actor is not None
        else {d.name: d for d in Domain.objects.select_related("customer").filter(name__in=names)}
    )
    for row in rows:
        if not row.email:
            continue
        row.domain = found.get(row.email.split("@", 1)[1])
        if row.domain is None:
            row.fail("address", _("No such domain among yours."))


def _check_fields(rows: list[Row]) -> None:
    for row in rows:
        if not row.email:
            continue
        try:
            if row.kind == "mailbox":
                actions.clean_mailbox_fields(row.fields, email=row.email)
                if row.password_hash or "password" in row.errors:
                    continue
                passwords.check_password(
                    row.password,
                    local_part=row.local_part,
                    domain=row.domain.name if row.domain else "",
                )
            elif row.kind in (choices.ALIAS, choices.GROUP):
                actions.clean_alias_fields({**row.fields, "targets": row.targets}, email=row.email)
        except ValidationError as exc:
            if hasattr(exc, "error_dict"):
                for key, messages in exc.message_dict.items():
                    row.fail(key, messages)
            else:
                row.fail("password", exc.messages)


def _check_addresses(rows: list[Row]) -> None:
    seen = Counter(r.email for r in rows if r.email)
    emails = [e for e in seen if e]
    taken: set[str] = set()
    # One array parameter per statement (``= ANY(%s)``): an ``IN`` list of 100,000
    # placeholders costs more to build and plan than the index probes themselves.
    with connection.cursor() as cursor:
        for model in (Mailbox, Alias):
            table = connection.ops.quote_name(model._meta.db_table)
            cursor.execute(
                f"SELECT email FROM {table} WHERE email = ANY(%s)",  # noqa: S608 (model table)
                [emails],
            )
            taken.update(email for (email,) in cursor.fetchall())
    for row in rows:
        if not row.email:
            continue
        if seen[row.email] > 1:
            row.fail("address", _("This address appears more than once in the file."))
        if row.email in taken:
            row.fail("address", _("This address already exists."))


def _totals(rows: list[Row]) -> dict[int, dict[str, int]]:
    totals: dict[int, dict[str, int]] = defaultdict(
        lambda: {"mailboxes": 0, "aliases": 0, "quota_mb": 0}
    )
    for row in rows:
        if row.domain is None:
            continue
        bucket = totals[row.domain.customer_id]
        if row.kind == "mailbox":
            bucket["mailboxes"] += 1
            bucket["quota_mb"] += row.fields.get("quota_mb", row.domain.default_quota_mb)
        elif row.kind in (choices.ALIAS, choices.GROUP):
            bucket["aliases"] += 1
    return totals


def _customers(rows: list[Row]) -> dict[int, Customer]:
    return {r.domain.customer_id: r.domain.customer for r in rows if r.domain is not None}


def _check_limits(rows: list[Row], actor: Any) -> list[dict[str, Any]]:
    """Dry-run view of the limits (applying checks again under locks)."""
    customers = _customers(rows)
    totals = _totals(rows)
    problems: list[dict[str, Any]] = []
    paths = {p for c in customers.values() for p in c.ancestor_paths}
    capped = {r.customer_path: r for r in ResourceLimit.objects.filter(customer_path__in=paths)}
    if not capped:
        return problems
    usage = limits.usage_of_subtrees(capped)
    adding: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for pk, bucket in totals.items():
        for path in customers[pk].ancestor_paths:
            if path in capped:
                for key, value in bucket.items():
                    adding[path][key] += value
    for path, row in capped.items():
        for resource, column, unit in (
            ("mailboxes", "mailboxes", 1),
            ("aliases", "aliases", 1),
            ("quota_gb", "quota_mb", 1024),
        ):
            cap = row.limit_of(resource)
            extra = adding[path][column]
            if cap is None or not extra:
                continue
            used = usage[path][resource]
            if used + extra > cap * unit:
                owner = Customer.objects.get(pk=row.customer_id)
                problems.append(
                    {
                        "row": 0,
                        "address": "",
                        "errors": {
                            "limit": [
                                limits._message(
                                    resource, cap, used, extra, limits._label(owner, actor)
                                )
                            ]
                        },
                    }
                )
    return problems


def dry_run(data: bytes | str, *, actor: Any, domain: Domain | None = None) -> dict[str, Any]:
    """Validate an upload and report, without writing anything."""
    require_permission(actor, perms.MAIL_MANAGE)
    if domain is not None:
        require_in_scope(domain, actor)
    return plan(data, actor=actor, domain=domain).report()


@action
def request_import(
    *, actor: Any, data: bytes | str, domain: Domain | None = None, customer: Customer | None = None
) -> tuple[CsvImport, dict[str, Any]]:
    """Validate, then store the upload encrypted and start the one job that applies it.

    Refused (nothing stored) when the dry run finds any error.
    """
    require_permission(actor, perms.MAIL_MANAGE)
    if domain is not None:
        require_in_scope(domain, actor)
    text = decode(data)
    result = plan(text, actor=actor, domain=domain)
    report = result.report(limit=1000)
    if not result.ok:
        return None, report  # type: ignore[return-value]
    if customer is None:
        customer = (
            domain.customer if domain is not None else Customer.objects.get(pk=actor.customer_id)
        )
    require_in_scope(customer, actor)
    upload = CsvImport.objects.create(
        customer=customer,
        customer_path=customer.path,
        domain=domain,
        requested_by_id=getattr(actor, "pk", None),
        payload=text,
        row_count=len(result.rows),
    )
    job = jobs.enqueue(
        JOB_KIND,
        actor=actor,
        title=_("Import %(n)d rows from CSV") % {"n": len(result.rows)},
        customer=customer,
        params={"import_id": upload.pk},
        target=upload,
        total=len(result.rows),
    )
    CsvImport.objects.filter(pk=upload.pk).update(job_id=job.pk)
    upload.job_id = job.pk
    auditing.record(
        "mail.import.request",
        object_type="mail.csvimport",
        object_id=upload.pk,
        object_repr=f"CSV import of {len(result.rows)} rows",
        customer=customer,
        after={"rows": len(result.rows), "job": job.pk},
    )
    return upload, report


def apply_import(upload: CsvImport, *, actor: Any, reporter: Any = None) -> dict[str, Any]:
    """Write every row of a stored upload in one transaction, or nothing at all."""
    domain = upload.domain
    started = time.perf_counter()
    result = plan(upload.payload, actor=actor, domain=domain)
    if not result.ok:
        report = result.report(limit=50)
        lines = [
            f"row {e['row']}: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in e["errors"].items())
            for e in report["errors"]
        ]
        raise jobs.PermanentJobError(
            _("Nothing was imported; %(n)d problems:") % {"n": report["error_count"]}
            + "\n"
            + "\n".join(lines)
        )
    rows = result.rows
    if reporter is not None:
        reporter.say(
            gettext_noop("validated %(rows)s rows in %(seconds).1f s"),
            rows=len(rows),
            seconds=time.perf_counter() - started,
        )
    mailbox_rows = [r for r in rows if r.kind == "mailbox"]
    started = time.perf_counter()
    # Plain passwords are not hashed here (~240 CPU-s for 90,000): the mailboxes get
    # PENDING_HASH and the password waits encrypted for the activation job (issue 19).
    # Imported hashes are taken as they are (checked).
    pending = [r for r in mailbox_rows if not r.password_hash]
    tokens = activation.encrypt_all([r.password for r in pending])
    hashes = [r.password_hash or passwords.PENDING_HASH for r in mailbox_rows]
    if reporter is not None and pending:
        reporter.say(
            gettext_noop("encrypted %(count)s passwords for activation in %(seconds).1f s"),
            count=len(pending),
            seconds=time.perf_counter() - started,
        )
    started = time.perf_counter()
    try:
        written = _write_all(
            upload,
            rows,
            mailbox_rows,
            hashes,
            ([r.email for r in pending], tokens),
            actor=actor,
            reporter=reporter,
        )
    except (DatabaseError, psycopg.Error) as exc:
        # A constraint, a trigger or a lost connection: the transaction rolled back, so the
        # job can say truthfully that nothing was written. The details go to the log only.
        logger.exception("CSV import %s refused by the database", upload.pk)
        raise jobs.PermanentJobError(
            _("Nothing was imported: the database refused the rows (%(error)s).")
            % {"error": _first_line(exc)}
        ) from exc
    if reporter is not None:
        reporter.say(
            gettext_noop("wrote %(rows)s rows in %(seconds).1f s"),
            rows=len(rows),
            seconds=time.perf_counter() - started,
        )
    _announce_import(rows, reporter)
    return written


def _first_line(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]


def _announce_import(rows: list[Row], reporter: Any) -> None:
    """Tell deploy about the committed rows; a failing receiver cannot undo the import.

    Before this ran after commit inside the transaction block, so a receiver's error marked
    the job Failed although every row was written (issue 11).
    """
    by_customer: dict[str, set[int]] = defaultdict(set)
    for row in rows:
        by_customer[row.domain.customer_path].add(row.domain.pk)
    try:
        for path, ids in by_customer.items():
            announce(path, ids, kind="import")
    except Exception as exc:  # the rows are committed: report, never fail the job
        logger.exception("announcing a committed CSV import failed")
        if reporter is not None:
            reporter.say(
                gettext_noop("imported, but telling the nodes failed: %(error)s"),
                error=_first_line(exc),
            )


def _write_all(
    upload: CsvImport,
    rows: list[Row],
    mailbox_rows: list[Row],
    hashes: list[str],
    pending: tuple[list[str], list[str]],
    *,
    actor: Any,
    reporter: Any,
) -> dict[str, Any]:
    """Every row, the limits, the audit record and the upload's status: one transaction."""
    now = timezone.now()
    with transaction.atomic():
        domain_ids = sorted({r.domain.pk for r in rows})
        list(Domain.objects.select_for_update().filter(pk__in=domain_ids).order_by("pk"))
        _check_addresses(rows)
        clash = [r for r in rows if r.errors]
        if clash:
            raise jobs.PermanentJobError(
                _("Nothing was imported: %(n)d addresses were taken meanwhile, e.g. %(first)s.")
                % {"n": len(clash), "first": clash[0].email}
            )
        customers = _customers(rows)
        totals = _totals(rows)
        try:
            limits.reserve_many(
                [
                    (customers[pk], totals[pk])
                    for pk in sorted(customers, key=lambda k: customers[k].path)
                ],
                actor=actor,
            )
        except ValidationError as exc:
            raise jobs.PermanentJobError(
                _("Nothing was imported: %(error)s") % {"error": " ".join(exc.messages)}
            ) from exc
        new_mailboxes = []
        for row, hashed in zip(mailbox_rows, hashes, strict=True):
            fields = actions.clean_mailbox_fields(row.fields, email=row.email)
            fields.setdefault("quota_mb", row.domain.default_quota_mb)
            new_mailboxes.append(
                Mailbox(
                    customer_id=row.domain.customer_id,
                    customer_path=row.domain.customer_path,
                    domain=row.domain,
                    local_part=row.local_part,
                    email=row.email,
                    password_hash=hashed,
                    password_changed_at=now,
                    created_at=now,
                    updated_at=now,
                    **fields,
                )
            )
        new_aliases = []
        for row in rows:
            if row.kind not in (choices.ALIAS, choices.GROUP):
                continue
            fields = actions.clean_alias_fields(
                {**row.fields, "targets": row.targets}, email=row.email
            )
            new_aliases.append(
                Alias(
                    customer_id=row.domain.customer_id,
                    customer_path=row.domain.customer_path,
                    domain=row.domain,
                    local_part=row.local_part,
                    email=row.email,
                    created_at=now,
                    updated_at=now,
                    **fields,
                )
            )
        done = 0
        for model, objects in ((Mailbox, new_mailboxes), (Alias, new_aliases)):
            for batch in _batches(objects, 2000):
                _insert(model, batch)
                done += len(batch)
                if reporter is not None:
                    reporter.progress(done, len(rows))
        if actor is not None:
            outside = [
                m.email
                for m in new_mailboxes + new_aliases
                if not scoping.path_in_scope(m.customer_path, actor)
            ]
            if outside:
                raise PermissionDenied(_("Some rows fall outside your customers."))
        root = Customer.objects.get(pk=upload.customer_id)
        auditing.record(
            "mail.import.apply",
            object_type="mail.csvimport",
            object_id=upload.pk,
            object_repr=f"CSV import of {len(rows)} rows",
            customer=root,
            after={
                "mailboxes": [m.email for m in new_mailboxes],
                "aliases": [a.email for a in new_aliases],
            },
        )
        held = activation.hold(*pending, upload_id=upload.pk)
        # Queued in this transaction, dispatched after its commit; the reconciler queues it
        # again if this one is lost.
        job = activation.start(upload.pk, actor=actor) if held else None
        CsvImport.objects.filter(pk=upload.pk).update(payload="", status=CsvImport.APPLIED)
    written: dict[str, Any] = {"mailboxes": len(new_mailboxes), "aliases": len(new_aliases)}
    if held:
        written["passwords_pending"] = held
        written["activation_job"] = job.pk if job is not None else None
    return written


def _insert(model: type[models.Model], objects: list[Any]) -> None:
    """Insert new rows with COPY (ten times faster than INSERT for thousands of rows, in the
    same transaction)."""
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    for obj in objects:
        for f in fields:
            f.pre_save(obj, add=True)  # auto_now / auto_now_add timestamps
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    table = connection.ops.quote_name(model._meta.db_table)
    json_fields = {f.attname for f in fields if isinstance(f, models.JSONField)}
    with (
        connection.cursor() as wrapper,
        wrapper.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
    ):
        for obj in objects:
            copy.write_row(
                [
                    json.dumps(getattr(obj, f.attname))
                    if f.attname in json_fields
                    else getattr(obj, f.attname)
                    for f in fields
                ]
            )


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---------------------------------------------------------------------------------- export

EXPORT_HEADER = [
    "type",
    "address",
    "display_name",
    "quota_mb",
    "used_bytes",
    "enabled",
    "targets",
    "forward_to",
]


def export_rows(mailboxes: models.QuerySet, aliases: models.QuerySet) -> Iterator[str]:
    """CSV text, streamed: mailboxes then aliases; cells neutralised against formulas."""

    def rows() -> Iterator[list[Any]]:
        for m in mailboxes.order_by("customer_path", "email").iterator(chunk_size=2000):
            yield [
                "mailbox",
                m.email,
                m.display_name,
                m.quota_mb,
                m.used_bytes if m.used_bytes is not None else "",
                "true" if m.is_enabled else "false",
                "",
                " ".join(m.forward_to or []),
            ]
        for a in aliases.order_by("customer_path", "email").iterator(chunk_size=2000):
            yield [
                a.kind,
                a.email,
                a.name,
                "",
                "",
                "true" if a.is_enabled else "false",
                " ".join(a.targets or []),
                "",
            ]

    return stream_rows(EXPORT_HEADER, rows())
