"""``manage.py audit_verify``: chain what is committed, then check the audit hash chain;
exit 1 at the first broken link."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.chainer import chain_committed
from audit.verify import verify


class Command(BaseCommand):
    help = (
        "Link committed audit records into the chain, verify the hash chain and each "
        "record's scope; report the first altered, moved or removed record."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--no-chain",
            action="store_true",
            help="Verify only: do not link committed records first.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["no_chain"]:
            chain_committed()
        report = verify()
        finding = report.finding
        if finding is not None:
            raise CommandError(f"Audit chain broken at record {finding.seq}: {finding.problem}")
        self.stdout.write(self.style.SUCCESS(f"Audit chain intact ({report.records} records)."))
        if report.unchained:
            # Records committed a moment ago, or a chainer that is not running.
            self.stdout.write(
                f"{report.unchained} records not chained yet (oldest "
                f"{report.oldest_unchained_seconds:.1f} s old); each matches its own hash."
            )
        if report.unscoped:
            # Said every time: these records' customer_path is not covered by their hash.
            self.stdout.write(
                f"{report.unscoped} records predate scope evidence (hash version 1): a change "
                "of their customer_path cannot be detected."
            )
