"""What ``purge_mailbox`` and ``purge_domain`` share: list, confirm, act, report."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from . import purge


class PurgeCommand(BaseCommand):
    what = ""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--permanent",
            action="store_true",
            help="Required: this destroys the mail, its snapshots, copies and exports for good.",
        )
        parser.add_argument(
            "--yes", action="store_true", help="Do not ask for confirmation (for scripts)."
        )

    def target(self, options: dict[str, Any]) -> tuple[str, str | None]:
        raise NotImplementedError

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["permanent"]:
            raise CommandError("Refusing without --permanent: this deletion cannot be undone.")
        domain, local_part = self.target(options)
        try:
            the_plan = purge.plan(domain, local_part)
        except purge.PurgeError as exc:
            raise CommandError(str(exc)) from exc
        except Exception as exc:  # a node or target that cannot be read: nothing was done
            raise CommandError(f"Cannot list what to purge: {exc}. Nothing was changed.") from exc
        for line in purge.describe(the_plan):
            self.stdout.write(line)
        if not options["yes"]:
            self.stdout.write('Type "yes" to destroy all of the above: ', ending="")
            self.stdout.flush()
            answer = input().strip()
            if answer != "yes":
                self.stdout.write("Nothing was changed.")
                return
        try:
            result = purge.execute(the_plan, log=self.stdout.write)
        except Exception as exc:
            raise CommandError(
                f"The purge stopped: {exc}. Run the same command again to finish it."
            ) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"{result['name']} permanently purged ({len(result['destroyed'])} copies "
                f"destroyed{', resumed' if result['resumed'] else ''})."
            )
        )
