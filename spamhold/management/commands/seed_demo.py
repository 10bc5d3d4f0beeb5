"""``manage.py seed_demo``: the demo installation (see :mod:`spamhold.demo`).

Idempotent: a second run adds and changes nothing. Administrators' passwords are printed
only when the administrator is created; ``manage.py demo_passwords --reset`` gives new ones.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import BaseCommand
from django.utils.translation import gettext as _

from spamhold.demo import logins
from spamhold.demo.seed import seed


class Command(BaseCommand):
    help = "Create the demo customer tree, administrators and mail (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        logging.getLogger("celery.app.trace").setLevel(logging.WARNING)  # the CSV job's line
        result = seed()
        # Today's usage snapshot (an upsert: a second run rewrites the same rows), so the
        # Usage page shows the demo tree at once instead of after the first daily run.
        from usage import snapshot as usage_snapshot

        usage_snapshot.take()
        if result.created_logins:
            self.stdout.write(_("Demo administrators (shown only this once):"))
            logins.print_logins(self.stdout.write, result.created_logins)
        existing = [
            name
            for name in logins.existing_usernames()
            if name not in {login.username for login in result.created_logins}
        ]
        if existing:
            self.stdout.write(
                _("Demo already seeded; the passwords of %(names)s are unchanged.")
                % {"names": ", ".join(existing)}
            )
            self.stdout.write(logins.how_to_reset())
        if result.csv_job_id is not None:
            self.stdout.write(
                _("Demo CSV import: job %(id)d, %(status)s.")
                % {"id": result.csv_job_id, "status": result.csv_job_status}
            )
