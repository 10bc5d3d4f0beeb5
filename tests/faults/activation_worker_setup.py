"""Imported by the activation fault test's Celery worker (``UMS_CELERY_IMPORTS``).

The converge choices of :mod:`tests.faults.worker_setup`, plus a gate in the activation:
one password per batch, and while ``<ACTIVATION_GATE_DIR>/gate`` exists the second batch
to be hashed in this process hangs (after writing ``waiting``), so the test can SIGKILL
the worker after the first batch committed and in the middle of the next. A restarted
worker imports this module afresh; once the gate file is gone nothing hangs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from mail import activation, passwords
from tests.faults import worker_setup  # noqa: F401  (services and test job kinds)

_DIR = Path(os.environ["ACTIVATION_GATE_DIR"])
_real = passwords.hash_many
_calls: list[int] = []

activation.BATCH = 1


def _gated(secrets_: list[str]) -> list[str]:
    _calls.append(len(secrets_))
    if len(_calls) == 2 and (_DIR / "gate").exists():
        (_DIR / "waiting").touch()
        while (_DIR / "gate").exists():
            time.sleep(0.2)
    return _real(secrets_)


passwords.hash_many = _gated
