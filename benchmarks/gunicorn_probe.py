"""gunicorn settings file of the benchmarks (``gunicorn -c benchmarks/gunicorn_probe.py``):
marks each worker thread that has served a request, nothing else.

A gunicorn worker imports the URL configuration (and with it most of the project) on its
first request, about a second of CPU here; a benchmark that times requests must first
have every worker thread past that. The number of concurrent connections does not decide
which worker accepts them (one worker often takes them all), so the benchmark warms until
each worker thread has left its mark: an empty file ``served/<pid>-<thread>`` under
``UMS_VAR_DIR`` (one ``stat`` per request after the first).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    marker = Path(os.environ["UMS_VAR_DIR"]) / "served" / f"{worker.pid}-{threading.get_ident()}"
    if not marker.exists():
        marker.parent.mkdir(exist_ok=True)
        marker.touch()
