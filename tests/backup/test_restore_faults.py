"""A restore survives its worker being SIGKILLed in the middle: a real Celery worker
(tests/harness/worker.py) runs the restore job over SSH against a real IMAP node with a
zfs-fuse pool; once the job has reported progress (some messages copied, not all), the
whole worker is killed and restarted, as systemd would. The job resumes by itself and
the restored folder then holds every message of the snapshot exactly once, with no
staging folder, lock or clone left behind."""

from __future__ import annotations

import json

import pytest

from backup.models import Snapshot
from backup.restore import restored_date
from tests.backup.test_snapshots_node import store_fleet  # noqa: F401  (fixture)
from tests.converge.conftest import (  # noqa: F401  (fixtures)
    controller_key,
    controller_pkey,
    mail_services,
    zone,
)
from tests.converge.fleet import Fleet
from tests.converge.test_mail_store import IMAP, PASSWORD, _failed_jobs
from tests.fixtures import Cast, token_client
from tests.harness.worker import celery_stack, wait_for
from ums import jobs
from ums.models import Job

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]
DOMAIN = "restorefault.example"
MESSAGES = 4000
STALE = 6

# Writes MESSAGES message files into a folder of the Maildir as the mail user would.
SEED = r"""
import os, sys
folder, count = sys.argv[1], int(sys.argv[2])
for sub in ("cur", "new", "tmp"):
    os.makedirs(os.path.join(folder, sub), exist_ok=True)
    os.chown(os.path.join(folder, sub), 5000, 5000)
for i in range(count):
    path = os.path.join(folder, "cur", "%d.M%dP1.seed:2,S" % (1733000000 + i, i))
    with open(path, "w") as handle:
        handle.write("Subject: bulk %d\n\n" % i + "x" * 3000 + "\n")
    os.chown(path, 5000, 5000)
os.chown(folder, 5000, 5000)
"""


def test_worker_killed_mid_restore_heals_with_every_message_once(
    cast: Cast,
    store_fleet: Fleet,  # noqa: F811
    settings,
    tmp_path,
) -> None:
    jobs.load_handlers()
    f = store_fleet
    client = token_client(cast.sub_admin)
    response = client.post(
        "/api/v1/mail/domains/", {"name": DOMAIN, "customer": cast.ministry.pk}, format="json"
    )
    assert response.status_code == 201, response.content
    domain_id = response.json()["id"]
    response = client.post(
        "/api/v1/mail/mailboxes/",
        {"domain": domain_id, "localPart": "alice", "password": PASSWORD, "quotaMb": 200},
        format="json",
    )
    assert response.status_code == 201, response.content
    mailbox_id = response.json()["id"]
    assert not _failed_jobs(), _failed_jobs()
    box = f"/var/mail/vhosts/{DOMAIN}/alice"
    f.in_node(IMAP, ["python3", "-c", SEED, f"{box}/Maildir/.Bulk", str(MESSAGES)], timeout=300)
    for sub in ("cur", "new", "tmp"):  # the inbox, as Courier would have made it
        f.in_node(IMAP, ["install", "-d", "-o", "5000", "-g", "5000", f"{box}/Maildir/{sub}"])
    response = client.post("/api/v1/backup/snapshots/now/", {"domain": domain_id}, format="json")
    assert Job.objects.get(pk=response.json()["id"]).status == Job.SUCCEEDED
    snap = Snapshot.objects.get(domain_id=domain_id, tier="manual")
    f.in_node(IMAP, ["rm", "-rf", f"{box}/Maildir/.Bulk"])  # deleted by mistake

    settings.UMS_JOB_STALE_SECONDS = STALE
    env = {
        "UMS_NODE_SETTINGS": json.dumps(settings.UMS_CONVERGE),
        "UMS_JOB_STALE_SECONDS": str(STALE),
        "UMS_RECONCILE_INTERVAL": "1",
        "UMS_AUTO_CONVERGE": "false",
    }
    with celery_stack(tmp_path, env=env) as (worker, _beat):
        response = client.post(
            "/api/v1/backup/restores/",
            {"snapshot": snap.pk, "mailbox": mailbox_id, "folder": "Bulk"},
            format="json",
        )
        assert response.status_code == 202, response.content
        job_id = response.json()["id"]

        def midway() -> bool:
            job = Job.objects.get(pk=job_id)
            assert job.status not in Job.FINISHED, (job.status, job.log, job.error)
            return 0 < job.progress_done < job.progress_total

        wait_for(midway, timeout=120, interval=0.1, what="the restore to be part-way")
        worker.kill()
        worker.restart()
        job = wait_for(
            lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(),
            timeout=180,
            what="the restore job to finish after the kill",
        )
        assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}\n{worker.log_tail()}"
        assert job.attempts >= 2, job.log

    target = f"{box}/Maildir/.Restored {restored_date(snap).isoformat()}.Bulk"
    names = f.in_node(IMAP, ["ls", f"{target}/cur", f"{target}/new"]).stdout.split()
    files = [n for n in names if n.endswith(":2,S")]
    assert len(files) == MESSAGES and len(set(files)) == MESSAGES
    assert f.in_node(IMAP, ["ls", "-A", box]).stdout.split() == ["Maildir"]
    assert not f.in_node(IMAP, ["ls", "-A", f"{target}/tmp"]).stdout.split()
    assert "ums-restore-" not in f.in_node(IMAP, ["zfs", "list", "-H", "-o", "name"]).stdout
    second = f"{box}/Maildir/.Restored {restored_date(snap).isoformat()} (2)"
    assert f.in_node(IMAP, ["ls", "-d", second], check=False).returncode != 0
