"""Migration operations that apply only on PostgreSQL (the embedded SQLite skips them)."""

from __future__ import annotations

from django.db import migrations


def postgres_only(forward_sql: list[str], reverse_sql: list[str]) -> migrations.RunPython:
    def forward(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            for statement in forward_sql:
                schema_editor.execute(statement)

    def backward(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            for statement in reverse_sql:
                schema_editor.execute(statement)

    return migrations.RunPython(forward, backward)
