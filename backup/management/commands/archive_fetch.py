"""``manage.py archive_fetch DOMAIN OUTPUT [--target ID] [--snapshot NAME]``: read a Maildir
archive copy back from its target, decrypt it, check its SHA-256 against the manifest and
write the plain tar to OUTPUT (extract with ``tar -xf OUTPUT``: ``<local part>/Maildir``).
An increment is written as its whole point, assembled from its chain (each tar of the
chain checked against its SHA-256 on the way)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backup import archive_chain, crypto, drivers, offnode_archive
from backup import export as export_mod
from backup.models_offnode import OffnodeCopy


class Command(BaseCommand):
    help = "Decrypt a domain's Maildir archive copy (newest, or of one snapshot) into a tar."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("domain")
        parser.add_argument("output", type=Path)
        parser.add_argument("--target", type=int, help="the target's id (several hold it)")
        parser.add_argument("--snapshot", default="", help="the archive of this snapshot")

    def handle(self, *args: Any, **options: Any) -> None:
        rows = OffnodeCopy.objects.filter(
            domain_name=options["domain"].strip().lower(), kind=OffnodeCopy.ARCHIVE
        ).select_related("target")
        if options["target"]:
            rows = rows.filter(target_id=options["target"])
        rows = list(rows)
        if len(rows) != 1:
            raise CommandError(
                "No Maildir archive of this domain."
                if not rows
                else "Several targets hold archives of this domain: choose one with --target "
                + ", ".join(str(r.target_id) for r in rows)
            )
        row = rows[0]
        driver = drivers.driver_for(row.target)
        sha = hashlib.sha256()
        try:
            manifest = offnode_archive.read_manifest(driver, row.domain_name)
            found = [
                a
                for a in manifest["archives"]
                if not options["snapshot"] or a["snapshot"] == options["snapshot"]
            ]
            if not found:
                raise CommandError("No such archive on the target.")
            entry = found[-1]

            assembled = archive_chain.needs_assembly(entry)

            def hashed() -> Iterator[bytes]:
                chunks = archive_chain.plain_chunks(driver, manifest["archives"], entry)
                for piece in chunks:
                    sha.update(piece)
                    yield piece

            size = export_mod.write_private(options["output"], hashed())
        except (drivers.TargetError, crypto.DecryptionError) as exc:
            raise CommandError(str(exc)) from exc
        finally:
            driver.close()
        if assembled:
            self.stdout.write(
                f"{options['output']}: {size} bytes, snapshot {entry['snapshot']}, "
                "assembled from its chain, sha256 of each archive (verified)"
            )
            return
        if sha.hexdigest() != entry["sha256"]:
            raise CommandError(f"SHA-256 mismatch: got {sha.hexdigest()}, want {entry['sha256']}")
        self.stdout.write(
            f"{options['output']}: {size} bytes, snapshot {entry['snapshot']}, "
            f"sha256 {entry['sha256']} (verified)"
        )
