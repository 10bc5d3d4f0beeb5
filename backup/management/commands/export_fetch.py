"""``manage.py export_fetch ID OUTPUT``: read an export back from its target (or the
controller), decrypt it, check its SHA-256 and write the plain tar to OUTPUT."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backup import crypto, drivers
from backup import export as export_mod
from backup.models import Export


class Command(BaseCommand):
    help = "Decrypt a Maildir export (from its target or the controller) into a tar file."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("export_id", type=int)
        parser.add_argument("output", type=Path)

    def handle(self, *args: Any, **options: Any) -> None:
        export = Export.objects.select_related("target").filter(pk=options["export_id"]).first()
        if export is None or export.status != Export.READY:
            raise CommandError("No such export ready to fetch.")
        driver = handle = None
        if export.target_id:
            driver = drivers.driver_for(export.target)
            chunks = drivers.get_decrypted(driver, export.object_name)
        else:
            path = export_mod.file_path(export)
            handle = path.open("rb")
            chunks = crypto.decrypt_stream(iter(lambda: handle.read(1024 * 1024), b""))
        sha = hashlib.sha256()

        def hashed() -> Any:
            for piece in chunks:
                sha.update(piece)
                yield piece

        try:
            size = export_mod.write_private(options["output"], hashed())
        except (drivers.TargetError, crypto.DecryptionError) as exc:
            raise CommandError(str(exc)) from exc
        finally:
            if driver is not None:
                driver.close()
            if handle is not None:
                handle.close()
        if sha.hexdigest() != export.sha256:
            raise CommandError(f"SHA-256 mismatch: got {sha.hexdigest()}, want {export.sha256}")
        self.stdout.write(f"{options['output']}: {size} bytes, sha256 {export.sha256} (verified)")
