"""Fault tests: a real Celery worker and beat (tests/harness/worker.py) converging real
mail nodes (tests/converge/conftest.py), killed the ways production processes die.

Short lease and heartbeat periods keep the tests quick; the code paths are the
production ones. Every test waits for the system to heal *by itself* within a bound.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.converge.conftest import mail_nodes, mail_services  # noqa: F401
from tests.harness.worker import CeleryBeat, CeleryWorker, celery_stack
from tests.servers.conftest import controller_key, controller_pkey, zone  # noqa: F401

#: Seconds: the job heartbeat period is a fifth of STALE.
STALE = 6
LEASE = 6
RETRY_MAX = 10


@pytest.fixture
def fault_settings(settings, mail_services) -> dict[str, str]:  # noqa: F811
    """The same short periods in the test process and in the worker it starts."""
    settings.UMS_JOB_STALE_SECONDS = STALE
    settings.UMS_CONVERGE_LEASE_SECONDS = LEASE
    settings.UMS_CONVERGE_RETRY_MAX_SECONDS = RETRY_MAX
    return {
        "UMS_CELERY_IMPORTS": "tests.faults.worker_setup",
        "UMS_NODE_SETTINGS": json.dumps(settings.UMS_CONVERGE),
        "UMS_JOB_STALE_SECONDS": str(STALE),
        "UMS_CONVERGE_LEASE_SECONDS": str(LEASE),
        "UMS_CONVERGE_RETRY_MAX_SECONDS": str(RETRY_MAX),
        "UMS_RECONCILE_INTERVAL": "1",
        "UMS_AUTO_CONVERGE": "true",
    }


@contextmanager
def stack(tmp_path: Path, env: dict[str, str]) -> Iterator[tuple[CeleryWorker, CeleryBeat]]:
    with celery_stack(tmp_path, env=env) as (worker, beat):
        assert beat is not None
        yield worker, beat
