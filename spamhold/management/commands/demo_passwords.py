"""``manage.py demo_passwords [--reset]``: new passwords for the demo administrators."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils.translation import gettext as _

from spamhold.demo import logins


class Command(BaseCommand):
    help = "Reset the demo administrators' passwords (with --reset) and print the new ones."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset",
            action="store_true",
            help="give every demo administrator a new random password and print it",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        names = logins.existing_usernames()
        if not names:
            self.stdout.write(_("There are no demo administrators; run manage.py seed_demo."))
            return
        if not options["reset"]:
            self.stdout.write(
                _(
                    "The demo administrators (%(names)s) keep their passwords. Run with "
                    "--reset to give each a new random password; the new ones are printed "
                    "once and the old ones stop working."
                )
                % {"names": ", ".join(names)}
            )
            return
        self.stdout.write(_("New passwords of the demo administrators:"))
        logins.print_logins(self.stdout.write, logins.reset_passwords())
