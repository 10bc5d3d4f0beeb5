"""``manage.py audit_chain``: link committed audit records into the hash chain.

The safety net of :mod:`audit.chainer`: appends chain their own records right after their
commit; a session that died in between leaves records for this pass. Run it from a timer
(every minute is plenty) or once after a crash; it is idempotent and never waits for
another chainer (it leaves the work to it).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from audit.chainer import chain_committed, pending


class Command(BaseCommand):
    help = "Link committed audit records into the hash chain (safe to run any time)."

    def handle(self, *args: Any, **options: Any) -> None:
        linked = chain_committed()
        self.stdout.write(f"Linked {linked} records; {pending()} not chained yet.")
