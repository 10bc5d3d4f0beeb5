"""Crash safety of the cloud DB seed on real parts: a real Celery worker, sent the
reconciler by beat, is SIGKILLed while it copies A's database into the new cloud DB node
B (mariadb-dump relayed through the controller). B is left without a slave
configuration (the copy is only marked done by CHANGE MASTER after it), the pass's lease
expires, and the restarted worker's next pass copies again: B ends up replicating
with every row of A, with nothing done by hand."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from clouddb import reconcile
from clouddb.models import CloudDbMember
from tests.fixtures import Cast
from tests.harness.worker import celery_stack, wait_for

from .nodes import A, B, DbFleet, make_nextcloud_db

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]
ROWS = 60000  # about 60 MB: the copy takes seconds, long enough to be cut
FILL = "INSERT INTO nextcloud.big SELECT seq, REPEAT('x', 1000) FROM nextcloud.seq_1_to_60000"


def test_worker_killed_mid_seed_then_the_next_pass_seeds_again(
    cast: Cast, db_fleet: DbFleet, tmp_path: Path
) -> None:
    f = db_fleet
    f.approve(A)
    assert reconcile.run()["errors"] == []
    make_nextcloud_db(f, A)
    f.sql(A, "CREATE TABLE nextcloud.big (id INT PRIMARY KEY, v TEXT)")
    f.sql(A, FILL)
    f.sql(A, "INSERT INTO nextcloud.t (v) VALUES ('kept')")
    node_b = f.approve(B)  # its member row comes with the reconciler's next pass
    env = {"UMS_CLOUDDB_CHECK_INTERVAL": "1", "UMS_CLOUDDB_LEASE_SECONDS": "6"}
    celery_dir = tmp_path / "celery"
    celery_dir.mkdir()
    with celery_stack(celery_dir, env=env) as (worker, _beat):

        def seeding() -> bool:
            return CloudDbMember.objects.filter(node=node_b, state="seeding").exists()

        wait_for(seeding, timeout=90, interval=0.05, what="the seed of B to start")
        time.sleep(0.5)
        worker.kill()
        member = CloudDbMember.objects.get(node=node_b)
        assert member.state == CloudDbMember.SEEDING, "the seed ended before the kill"
        # Cut: B does not replicate (a half copy is never taken for a replica).
        assert f.sql(B, "SHOW SLAVE STATUS").stdout.strip() == ""
        worker.restart()

        def replicating() -> bool:
            member.refresh_from_db()
            return member.state == CloudDbMember.REPLICA and member.replicating

        wait_for(replicating, timeout=240, what="B to be seeded again and replicate")
    f.wait_rows(B, ["kept"])
    count = f.sql(B, "SELECT COUNT(*) FROM nextcloud.big").stdout.strip()
    assert count == str(ROWS)
    f.sql(A, "INSERT INTO nextcloud.t (v) VALUES ('later')")
    f.wait_rows(B, ["kept", "later"])
