"""Migration operations written as raw PostgreSQL (triggers, indexes Django cannot express).

PostgreSQL is the only engine, so these always run; the helper keeps each migration's
forward and reverse statements side by side.
"""

from __future__ import annotations

from django.db import migrations


def postgres_only(forward_sql: list[str], reverse_sql: list[str]) -> migrations.RunPython:
    def forward(apps, schema_editor):
        for statement in forward_sql:
            schema_editor.execute(statement)

    def backward(apps, schema_editor):
        for statement in reverse_sql:
            schema_editor.execute(statement)

    return migrations.RunPython(forward, backward)
