"""``manage.py purge_domain NAME --permanent [--yes]``: see :mod:`backup.purge`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from backup.purge_cli import PurgeCommand


class Command(PurgeCommand):
    help = (
        "Permanently delete a domain with every mailbox: its dataset and Maildirs, every "
        "snapshot and off-node copy, and every export. Lists everything first and asks."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        super().add_arguments(parser)

    def target(self, options: dict[str, Any]) -> tuple[str, str | None]:
        return options["name"], None
