"""The password activation of a CSV import survives a SIGKILLed worker on real nodes.

A real Celery worker and beat (tests/harness/worker.py) run the activation job of an
import made through the API (tests/converge/test_csv_activation.py holds its dispatch
back until the worker runs); one password per batch, and the second batch hangs in the
worker (:mod:`tests.faults.activation_worker_setup`) after the first committed. The
whole worker is SIGKILLed there and restarted, as systemd would; then the test only
waits: the jobs reconciler (beat) sees the dead run and runs the job again, the nodes
converge, and every imported password logs in over IMAPS with its userdb line on both
nodes holding the committed hash.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from mail.models import Mailbox, PendingPassword
from tests.converge.test_csv_activation import (  # noqa: F401  (a fixture among them)
    DOMAIN,
    USERS,
    csv_password,
    held_activation,
    imaps_login,
    import_csv,
    userdb_password,
)
from tests.converge.test_mail_flow import setup_mail
from tests.fixtures import Cast
from tests.harness.worker import wait_for
from ums.models import Job

from .conftest import stack
from .test_converge_faults import HEAL_BOUND, converged

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]


def test_activation_worker_killed_between_batches_heals_and_every_login_works(
    cast: Cast,
    mail_nodes,
    fault_settings,
    held_activation: list[int],  # noqa: F811
    tmp_path,
) -> None:
    from ums.tasks import run_job

    client, _domain = setup_mail(cast)
    response = client.post(
        reverse("mail-import-list"), {"csv": import_csv(), "dryRun": False}, format="json"
    )
    assert response.status_code == 201, response.content
    [held] = held_activation
    gate = tmp_path / "activation-gate"
    gate.mkdir()
    (gate / "gate").touch()
    env = {
        **fault_settings,
        "UMS_CELERY_IMPORTS": "tests.faults.activation_worker_setup",
        "ACTIVATION_GATE_DIR": str(gate),
    }
    with stack(tmp_path, env) as (worker, _beat):
        run_job.delay(held)
        wait_for((gate / "waiting").exists, timeout=90, what="the second batch to hang")
        # The first batch committed (its hash and the converge it announced); the second
        # is being hashed in the worker that dies now.
        assert PendingPassword.objects.count() == len(USERS) - 1
        assert Job.objects.get(pk=held).status == Job.RUNNING
        worker.kill()
        (gate / "gate").unlink()
        worker.start()  # as systemd's Restart=always would
        wait_for(
            lambda: not PendingPassword.objects.exists() and converged(mail_nodes),
            timeout=HEAL_BOUND,
            what="the activation to finish and the fleet to converge",
        )
        job = wait_for(
            lambda: Job.objects.filter(pk=held, status__in=Job.FINISHED).first(),
            timeout=30,
            what="the activation job to finish",
        )
    assert job.status == Job.SUCCEEDED and job.attempts >= 2, (job.error, job.log)
    assert job.progress_done == len(USERS)
    failed = list(Job.objects.filter(status=Job.FAILED).values_list("kind", "error"))
    assert not failed, failed
    for local in USERS:
        email = f"{local}@{DOMAIN}"
        stored = Mailbox.objects.get(email=email).password_hash
        assert not Mailbox.objects.get(email=email).password_pending
        for node in ("imap", "smtp"):
            assert userdb_password(mail_nodes, node, email) == stored
        imaps_login(mail_nodes, email, csv_password(local)).logout()
