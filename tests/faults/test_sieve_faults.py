"""Switching a mailbox's active Sieve script survives a worker killed mid-converge.

The IMAP node's converge is stopped while it compiles the staged scripts (``sievec``
gated, :class:`tests.faults.nodes.Gate`), the worker is SIGKILLed there and started again;
without anything else done, the node ends up running only the newly active script and
mail follows it.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.converge.conftest import MailNodes
from tests.converge.test_delivery import mailbox_id, send, wait_for
from tests.converge.test_mail_flow import DOMAIN, Cast_holder, assert_jobs_succeeded, setup_mail
from tests.fixtures import Cast
from tests.harness.worker import wait_for as wait_until
from ums.models import Job

from .conftest import stack
from .nodes import Gate
from .test_converge_faults import HEAL_BOUND, converged, lease_holder

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]


def script(folder: str) -> str:
    rule = f'if header :contains "subject" "sorted" {{ fileinto "{folder}"; }}\n'
    return f'require ["fileinto"];\n{rule}'


def test_worker_killed_while_the_node_compiles_the_new_active_script(
    cast: Cast, mail_nodes: MailNodes, fault_settings, tmp_path
) -> None:
    Cast_holder.cast = cast
    client, _domain = setup_mail(cast)
    alice = mailbox_id(f"alice@{DOMAIN}")
    ids = {}
    for name in ("One", "Two"):
        response = client.post(
            reverse("mail-sieve-script-list"),
            {"mailbox": alice, "name": name, "mode": "raw", "script": script(name)},
            format="json",
        )
        assert response.status_code == 201, response.content
        ids[name] = response.json()["id"]
    assert_jobs_succeeded()
    live = mail_nodes.imap.path(f"/etc/ums-lda/sieve/{DOMAIN}/alice/user.sieve")
    assert live.read_text() == script("Two")

    gate = Gate(mail_nodes.imap, "sievec", "/usr/bin/sievec")
    try:
        with stack(tmp_path, fault_settings) as (worker, _beat):
            gate.close()
            response = client.post(reverse("mail-sieve-script-activate", args=[ids["One"]]))
            assert response.status_code == 200, response.content
            wait_until(gate.waiting, timeout=90, what="the IMAP converge to reach sievec")
            stopped = wait_until(
                lambda: lease_holder(mail_nodes.imap_node), timeout=10, what="lease holder"
            )
            worker.kill()
            gate.open()
            worker.start()  # as systemd's Restart=always would
            wait_until(lambda: converged(mail_nodes), timeout=HEAL_BOUND, what="the fleet to heal")
    finally:
        gate.remove()
    assert live.read_text() == script("One")
    # The killed job itself ran again on the restarted worker and finished the switch.
    stopped.refresh_from_db()
    assert stopped.status == Job.SUCCEEDED and stopped.attempts >= 2, stopped.log
    send(mail_nodes, "boss@outside.test", f"alice@{DOMAIN}", "sorted marker-fault-1")
    wait_for(mail_nodes, "alice", "marker-fault-1", folder="One")
