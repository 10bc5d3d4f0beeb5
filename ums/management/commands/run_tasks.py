"""``manage.py run_tasks``: the embedded task runner (jobs and the periodic schedule).

``make run`` starts it; run it yourself beside ``runserver`` when developing without Celery.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ums.embedded.runner import TaskRunner, load_schedule, run_until_signalled


class Command(BaseCommand):
    help = "Run jobs (woken by NOTIFY, polled as a fallback) and the periodic schedule."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workers", type=int, default=4, help="jobs run at once")
        parser.add_argument("--poll", type=float, default=5.0, help="seconds between polls")
        parser.add_argument(
            "--no-schedule", action="store_true", help="run jobs only, not the beat schedule"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.UMS_TASK_MODE == "celery":
            raise CommandError(
                "CELERY_BROKER_URL is set: run `celery -A ums worker` and `celery -A ums beat`"
            )
        if options["workers"] < 1 or options["poll"] <= 0:
            raise CommandError("--workers must be at least 1 and --poll above 0")
        schedule = [] if options["no_schedule"] else load_schedule()
        runner = TaskRunner(
            workers=options["workers"], poll_seconds=options["poll"], schedule=schedule
        )
        run_until_signalled(runner)
