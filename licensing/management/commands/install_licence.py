"""``manage.py install_licence FILE``: verify a licence file and install it (audited as the
system). ``-`` reads standard input. Exit status 1, nothing changed, when it is refused."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from licensing import actions
from licensing.document import MAX_TEXT


class Command(BaseCommand):
    help = "Install the product licence from a file (verified against the product's keys)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the licence file, or - for standard input")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["file"]
        try:
            text = sys.stdin.read(MAX_TEXT + 1) if name == "-" else Path(name).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {name}: {exc}") from exc
        try:
            licence = actions.install_licence(actor=None, text=text)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        self.stdout.write(
            f"installed licence {licence.licence_id} for {licence.licensee}: "
            f"{licence.limit} {licence.model}, valid through {licence.expires} (UTC)"
        )
