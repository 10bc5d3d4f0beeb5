"""Imported by the dump fault test's Celery worker (``UMS_CELERY_IMPORTS``) at start.

It only slows the upload down (a pause before each object goes out), so the test can
SIGKILL the worker between two objects of a dump deterministically; every byte is still
written by the product's code to the real target.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from backup import dumps

PAUSE = 1.5
_original = dumps._file_chunks


def _slow_chunks(path: Path) -> Iterator[bytes]:
    time.sleep(PAUSE)
    yield from _original(path)


dumps._file_chunks = _slow_chunks
