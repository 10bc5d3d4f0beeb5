"""``manage.py serve_embedded``: what ``make run`` runs (see ums.embedded.supervisor)."""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from ums.embedded.supervisor import Supervisor


class Command(BaseCommand):
    help = (
        "Start the embedded PostgreSQL (unless DATABASE_URL is set), migrate, seed the demo, "
        "serve the portal with gunicorn and run tasks; stop everything on Ctrl-C or SIGTERM."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument(
            "--demo-nodes",
            action="store_true",
            help="also start two local mail nodes (manage.py demo_nodes; needs root)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        def out(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        supervisor = Supervisor(
            var_dir=settings.VAR_DIR,
            base_dir=settings.BASE_DIR,
            host=options["host"],
            port=options["port"],
            embedded_db=settings.EMBEDDED_POSTGRES,
            demo_nodes=options["demo_nodes"],
            # With a broker, Celery workers run the jobs; the embedded runner would refuse.
            run_tasks=settings.UMS_TASK_MODE != "celery",
            web_workers=options["web_workers"],
            out=out,
        )
        status = supervisor.run()
        if status:
            sys.exit(status)
