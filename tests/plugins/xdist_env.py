"""Give each pytest-xdist worker its own Redis databases, before Django reads its settings.

The suite spends most of its time waiting on real daemons in namespaced nodes, so ``make
test`` runs it in a few worker processes (``-n``). Each worker already gets its own test
database from pytest-django (``test_<name>_gw<N>``) and its own node slots from the harness
(an flock per slot); what they would still share is Redis: the cache, and the Celery broker
whose queues a worker's real Celery processes consume. A task published by one worker's test
and consumed by another's Celery worker would run against the wrong database. So worker N
moves both URLs N*4 databases up (modulo Redis's default 16). Loaded with ``-p`` so it runs
before pytest-django configures Django.
"""

from __future__ import annotations

import os
import re

REDIS_DATABASES = 16
STRIDE = 4


def shifted(url: str, worker: int) -> str:
    """``url`` with its database number moved ``worker * STRIDE`` up, modulo 16."""
    match = re.match(r"^(redis://[^/]*)(?:/(\d+))?$", url)
    if not match:
        return url
    base = int(match.group(2) or 0)
    return f"{match.group(1)}/{(base + worker * STRIDE) % REDIS_DATABASES}"


def _apply() -> None:
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not name.startswith("gw"):
        return
    worker = int(name[2:])
    for variable in ("REDIS_URL", "CELERY_BROKER_URL"):
        if os.environ.get(variable):
            os.environ[variable] = shifted(os.environ[variable], worker)


_apply()
