"""``manage.py audit_verify``: check the audit hash chain; exit 1 at the first broken link."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.verify import verify_chain


class Command(BaseCommand):
    help = "Verify the audit log's hash chain and report the first altered or removed record."

    def handle(self, *args: Any, **options: Any) -> None:
        finding = verify_chain()
        if finding is not None:
            raise CommandError(f"Audit chain broken at record {finding.seq}: {finding.problem}")
        self.stdout.write(self.style.SUCCESS("Audit chain intact."))
