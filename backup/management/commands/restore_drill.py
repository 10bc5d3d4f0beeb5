"""``manage.py restore_drill``: restore a controller dump into an empty database and verify it.

Exit status 0 only when every step passed (checksums, decryption, pg_restore, keys,
audit_verify); see :mod:`backup.dumps_drill`. Each run is recorded in the audit trail of
the controller the command runs on.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from backup import drivers, dumps_drill
from backup.dumps_actions import dump_targets
from backup.models import BackupTarget
from ums import auditing


class Command(BaseCommand):
    help = (
        "Fetch a controller dump from a backup target, verify its checksums, decrypt it, "
        "pg_restore it into an EMPTY database and run audit_verify on the result."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--target", type=int, help="backup target id (default: the first dump target)"
        )
        parser.add_argument("--dump", help="dump name (default: the newest complete dump)")
        parser.add_argument(
            "--database-url",
            required=True,
            help="postgres:// URL of an empty database to restore into",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        url = options["database_url"]
        if not url.startswith(("postgres://", "postgresql://")):
            raise CommandError("--database-url must be a postgres:// URL")
        if options["target"] is not None:
            target = BackupTarget.objects.filter(pk=options["target"]).first()
        else:
            target = dump_targets().first()
        if target is None:
            raise CommandError("No such backup target (and no dump target configured).")
        self.stdout.write(f"Target {target.name} ({target.location})")
        driver = drivers.driver_for(target)
        outcome, dump = "passed", options.get("dump") or ""
        try:
            report = dumps_drill.run(driver, url, dump=options.get("dump"), say=self.stdout.write)
            dump = report.dump
        except (dumps_drill.DrillFailed, drivers.TargetError) as exc:
            outcome = str(exc)
            raise CommandError(f"Restore drill FAILED: {exc}") from exc
        finally:
            driver.close()
            with transaction.atomic():
                auditing.record(
                    "backup_dump.drill",
                    obj=target,
                    extra={"dump": dump, "outcome": outcome[:2000]},
                )
        self.stdout.write(self.style.SUCCESS(f"Restore drill passed for {dump}."))
