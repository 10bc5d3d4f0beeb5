"""``manage.py demo_nodes up|down``: two local mail nodes for the demo (``make run DEMO_NODES=1``).

Demo only. It imports the test suite's node harness (``tests.harness``) and a few test
helpers, which is acceptable for this command alone: the nodes are the suite's namespaced
sshd nodes, enrolled through the real ``bootstrapcore.sh``, approved, converged and sent a
little mail (one message held by the content filter). See :mod:`spamhold.demo.nodes`.

Without root or the Debian packages of ``make test`` it says what is missing and exits 0,
so ``make run`` carries on without nodes. ``down`` is harmless when nothing runs.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Start (up) or stop (down) two local demo mail nodes in network namespaces."
    # ``down`` runs while make run shuts down (the database may be stopping): it needs
    # nothing but var/demo-nodes/, so no system checks either.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("subcommand", choices=["up", "down"])

    def handle(self, *args: Any, **options: Any) -> None:
        # Imported here: the harness needs nothing until a subcommand actually runs.
        from spamhold.demo.nodes import lifecycle

        # Each SSH connection and in-process task would log a line at INFO: keep the
        # output to what the demo does.
        for name in ("paramiko", "celery.app.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)
        if options["subcommand"] == "down":
            lifecycle.down(self.stdout.write)
            return
        try:
            lifecycle.up(self.stdout.write)
        except Exception as exc:
            raise CommandError(
                f"demo nodes failed: {exc}\nThey may still be running: "
                "manage.py demo_nodes down removes them."
            ) from exc
