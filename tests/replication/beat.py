"""What Celery beat does, for node tests and benchmarks that run without it: call a
periodic task every ``every`` seconds in a thread until stopped (errors printed, the loop
carries on, as beat does)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.db import connections


def beat(stop: threading.Event, every: float, work: Callable[[], object]) -> threading.Thread:
    def loop() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                work()
            except Exception as exc:  # beat carries on, as Celery beat does
                print(f"beat: {exc!r}")
            stop.wait(max(0.0, every - (time.monotonic() - started)))
        connections.close_all()  # this thread's: the test database is dropped at the end

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


@contextmanager
def beating(*entries: tuple[float, Callable[[], object]]) -> Iterator[threading.Event]:
    """Run each ``(every, work)`` as beat would while the block runs."""
    stop = threading.Event()
    threads = [beat(stop, every, work) for every, work in entries]
    try:
        yield stop
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=180)


def wait_for(check: Callable[[], object], what: str, timeout: float = 300.0) -> None:
    """Poll ``check`` until it is true; ``timeout`` is a hang guard, not a measurement."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not after {timeout:.0f} s"
        time.sleep(0.5)
