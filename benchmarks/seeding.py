"""Helpers shared by the seeders: what was seeded, COPY of model rows, index rebuilds."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from typing import Any

from django.core.management.color import no_style
from django.db import connection, models

INFO_TABLE = "bench_seed_info"


def words(text: str) -> list[str]:
    """A vocabulary written as one long string, as a list of words."""
    return text.split()


def ensure_info_table() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {INFO_TABLE} ("
            "key text PRIMARY KEY, value jsonb NOT NULL, seeded_at timestamptz DEFAULT now())"
        )


def read_info(key: str) -> dict[str, Any] | None:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT value FROM {INFO_TABLE} WHERE key = %s", [key])  # noqa: S608
        row = cursor.fetchone()
    if row is None:
        return None
    return row[0] if isinstance(row[0], dict) else json.loads(row[0])


def write_info(key: str, value: dict[str, Any]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {INFO_TABLE} (key, value) VALUES (%s, %s::jsonb) "  # noqa: S608
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, seeded_at = now()",
            [key, json.dumps(value)],
        )


def delete_info(key: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {INFO_TABLE} WHERE key = %s", [key])  # noqa: S608


def stored_columns(model: type[models.Model]) -> list[str]:
    """Attribute names of the columns a COPY must fill (every concrete field)."""
    return [f.attname for f in model._meta.concrete_fields]


def other_columns(model: type[models.Model], attnames: Sequence[str]) -> dict[str, Any]:
    """Values for the model's columns the seeder does not generate: their defaults.

    Other sessions add fields to the models while the benchmark lives on; a new field with
    a default (or nullable) is filled with it. A field without one, or a column the seeder
    names that the model lost, stops the seeding with a clear message.
    """
    expected = stored_columns(model)
    unknown = sorted(set(attnames) - set(expected))
    with connection.cursor() as cursor:
        in_table = {
            c.name
            for c in connection.introspection.get_table_description(cursor, model._meta.db_table)
        }
    values: dict[str, Any] = {}
    problems = []
    for f in model._meta.concrete_fields:
        # A field whose migration is not written yet has no column to fill.
        if f.attname in attnames or f.column not in in_table:
            continue
        if f.has_default():
            values[f.attname] = f.get_default()
        elif f.null:
            values[f.attname] = None
        else:
            problems.append(f.attname)
    if unknown or problems:
        raise RuntimeError(
            f"seeder for {model.__name__} is out of date with the model: it does not fill "
            f"{problems} (no default), and fills {unknown} (no such field)"
        )
    return values


def _copy_value(value: Any) -> Any:
    """A default as COPY's write_row takes it (JSON columns take a JSON string)."""
    return json.dumps(value) if isinstance(value, dict | list) else value


def _copy_text_value(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, dict | list):
        value = json.dumps(value)
    return str(value).translate(COPY_ESCAPES)


COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_statement(
    model: type[models.Model], attnames: Sequence[str], *, freeze: bool = False
) -> str:
    fields = {f.attname: f for f in model._meta.concrete_fields}
    columns = ", ".join(connection.ops.quote_name(fields[a].column) for a in attnames)
    table = connection.ops.quote_name(model._meta.db_table)
    options = " (FREEZE)" if freeze else ""
    return f"COPY {table} ({columns}) FROM STDIN{options}"


def copy_rows(
    model: type[models.Model],
    attnames: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    freeze: bool = False,
) -> int:
    """COPY tuples (in ``attnames`` order) into the model's table; returns the row count.

    JSON columns take a JSON string; ``freeze`` needs the table truncated in this transaction.
    Columns the seeder does not know get their model default.
    """
    others = other_columns(model, attnames)
    tail = tuple(_copy_value(v) for v in others.values())
    statement = copy_statement(model, [*attnames, *others], freeze=freeze)
    count = 0
    # wrapper.cursor is the psycopg cursor under Django's wrapper.
    with connection.cursor() as wrapper, wrapper.cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row((*row, *tail) if tail else row)
            count += 1
    return count


def copy_text(
    model: type[models.Model],
    attnames: Sequence[str],
    chunks: Iterable[bytes],
    *,
    freeze: bool = False,
) -> None:
    """COPY chunks already in COPY text format (tab-separated, escaped, newline-ended).

    Columns the seeder does not know get their model default, appended to every line.
    """
    others = other_columns(model, attnames)
    suffix = "".join("\t" + _copy_text_value(v) for v in others.values()).encode()
    statement = copy_statement(model, [*attnames, *others], freeze=freeze)
    with connection.cursor() as wrapper, wrapper.cursor.copy(statement) as copy:
        for chunk in chunks:
            # Escaped values hold no raw newline: each one ends a record.
            copy.write(chunk.replace(b"\n", suffix + b"\n") if suffix else chunk)


def reset_sequences(*model_list: type[models.Model]) -> None:
    statements = connection.ops.sequence_reset_sql(no_style(), list(model_list))
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def secondary_indexes(table: str) -> list[tuple[str, str]]:
    """(name, CREATE INDEX statement) of the indexes that back no constraint."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT i.relname, pg_get_indexdef(x.indexrelid)
            FROM pg_index x
            JOIN pg_class i ON i.oid = x.indexrelid
            JOIN pg_class t ON t.oid = x.indrelid
            WHERE t.relname = %s
              AND t.relnamespace = 'public'::regnamespace
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
            ORDER BY i.relname
            """,
            [table],
        )
        return list(cursor.fetchall())


@contextmanager
def indexes_dropped(table: str, timings: dict[str, float]):
    """Drop the table's secondary indexes for a bulk load and rebuild them afterwards.

    Definitions are read from the catalogue, so whatever the migrations created comes back
    exactly (GIN, pattern ops, partial indexes...). Use inside a transaction: a failure
    rolls the drop back too.
    """
    indexes = secondary_indexes(table)
    statistics = index_statistics([name for name, _ in indexes])
    with connection.cursor() as cursor:
        for name, _definition in indexes:
            cursor.execute(f"DROP INDEX {connection.ops.quote_name(name)}")
    yield [name for name, _ in indexes]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL maintenance_work_mem = '512MB'")
        for name, definition in indexes:
            started = time.perf_counter()
            cursor.execute(definition)
            timings[f"index {name}"] = round(time.perf_counter() - started, 2)
        for statement in statistics:
            cursor.execute(statement)


def index_statistics(names: list[str]) -> list[str]:
    """``ALTER INDEX`` statements restoring the raised statistics targets of these indexes'
    expression columns (a dropped and recreated index forgets them; the planner's choice
    for a rare or common needle depends on them)."""
    if not names:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, a.attnum, a.attstattarget
            FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            WHERE c.relname = ANY(%s) AND c.relkind = 'i' AND a.attstattarget > 0
            """,
            [names],
        )
        rows = cursor.fetchall()
    quote = connection.ops.quote_name
    return [
        f"ALTER INDEX {quote(name)} ALTER COLUMN {attnum} SET STATISTICS {int(target)}"
        for name, attnum, target in rows
    ]


def analyze(*tables: str, vacuum: bool = False) -> None:
    verb = "VACUUM (ANALYZE)" if vacuum else "ANALYZE"
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"{verb} {connection.ops.quote_name(table)}")
