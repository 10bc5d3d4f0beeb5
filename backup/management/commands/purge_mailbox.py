"""``manage.py purge_mailbox ADDRESS --permanent [--yes]``: see :mod:`backup.purge`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from backup.purge_cli import PurgeCommand


class Command(PurgeCommand):
    help = (
        "Permanently delete a mailbox: its Maildir, every snapshot and off-node copy "
        "holding it, and every export of it. Lists everything first and asks."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("address")
        super().add_arguments(parser)

    def target(self, options: dict[str, Any]) -> tuple[str, str | None]:
        local_part, sep, domain = options["address"].rpartition("@")
        if not sep or not local_part or not domain:
            raise CommandError("Give a mailbox address: name@domain")
        return domain, local_part
