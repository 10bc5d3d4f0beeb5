"""The fault-test harness kills real Celery processes the ways production processes die."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.worker import celery_stack, wait_for


@pytest.mark.django_db(transaction=True)
def test_pool_kill_leaves_the_main_process_which_forks_a_new_pool(tmp_path) -> None:
    with celery_stack(tmp_path, beat=False) as (worker, _beat):
        before = wait_for(worker.pool_pids, timeout=30, what="pool children")
        killed = worker.kill_pool()
        assert sorted(killed) == sorted(before)
        assert worker.alive
        after = wait_for(
            lambda: [p for p in worker.pool_pids() if p not in before],
            timeout=30,
            what="new pool children",
        )
        assert after
        worker.kill()
        assert not worker.alive
        # Dead or a zombie waiting for its parent's reaper: either way not running.
        for pid in after:
            status = Path(f"/proc/{pid}/status")
            assert not status.exists() or "State:\tZ" in status.read_text()
