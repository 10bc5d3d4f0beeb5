"""A domain whose converge succeeded is accepted by the SMTP node from that moment on.

"An outcome shown to an administrator must be true": once the job that added a domain
(or a mailbox in it) says succeeded, the MX must take mail for it. Seen once in
test_mail_auth: the converges had all succeeded and the first RCPT TO a new mailbox was
answered "554 5.7.1 Relay access denied". Each round here adds a domain through the API
and at once asks the SMTP node, the way another mail server would.
"""

from __future__ import annotations

import smtplib

import pytest
from django.urls import reverse

from deploy.services import probes
from tests.fixtures import Cast, token_client
from ums.models import Job

from .conftest import MailNodes
from .test_mail_flow import DOMAIN, PASSWORD, assert_jobs_succeeded, setup_mail

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

ROUNDS = 3


def rcpt(nodes: MailNodes, address: str) -> tuple[int, str]:
    """What the SMTP node answers an outside server's RCPT TO ``address``."""
    with smtplib.SMTP(nodes.smtp.address, 25, timeout=30) as smtp:
        smtp.ehlo("outside.test")
        code, _msg = smtp.mail("bob@outside.test")
        assert code == 250
        code, msg = smtp.rcpt(address)
        return code, msg.decode(errors="replace")


def assert_probe_refuses_a_relay_denial(nodes: MailNodes) -> None:
    """The probe script itself, in the SMTP node against its real Postfix: a domain the
    maps lack answers "Relay access denied", which fails the "hosted" mode and passes
    "any" (the mode used only when the node hosts no domain at all)."""
    verdicts = {}
    for mode in ("hosted", "any"):
        argv = ["python3", "-c", probes.SMTP_PROBE, nodes.smtp.address, "25"]
        argv += ["ums-probe@not-hosted.example", mode, "0"]
        done = nodes.smtp.exec_in_node(argv, check=False)
        assert "Relay access denied" in done.stdout, done.stdout + done.stderr
        verdicts[mode] = done.returncode
    assert verdicts == {"hosted": 1, "any": 0}, verdicts


def test_a_domain_is_accepted_as_soon_as_its_converge_succeeded(
    cast: Cast, mail_nodes: MailNodes
) -> None:
    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("customer-list"),
        {"name": "Accept Customer", "parent": cast.government.pk},
        format="json",
    )
    assert response.status_code == 201, response.content
    customer = response.json()["id"]
    for n in range(ROUNDS):
        name = f"accept{n}.example"
        response = client.post(
            reverse("mail-domain-list"), {"name": name, "customer": customer}, format="json"
        )
        assert response.status_code == 201, response.content
        assert_jobs_succeeded()
        # The domain is ours now: an unknown user in it, never a relay refusal.
        code, msg = rcpt(mail_nodes, f"nobody@{name}")
        assert code == 550 and "Relay access denied" not in msg, (n, code, msg)
        if n == 0:
            # No mailbox anywhere yet: the converge's own probe asked for a made-up
            # address of the domain (a relay refusal would have failed the job).
            logs = [j.log for j in Job.objects.filter(log__contains=f"ums-probe@{name}")]
            assert logs, "the SMTP probe did not ask about the hosted domain"
            assert all("Relay access denied" not in log for log in logs), logs
            assert_probe_refuses_a_relay_denial(mail_nodes)
        response = client.post(
            reverse("mail-mailbox-list"),
            {"domain": response.json()["id"], "localPart": "alice", "password": PASSWORD},
            format="json",
        )
        assert response.status_code == 201, response.content
        assert_jobs_succeeded()
        assert rcpt(mail_nodes, f"alice@{name}")[0] == 250, n


def test_a_late_heartbeat_of_the_last_converge_does_not_swallow_the_next_ones(
    cast: Cast, mail_nodes: MailNodes
) -> None:
    """The flake's cause, made deterministic: the SMTP node's approval converge has ended
    (lease freed) and its heartbeat thread, mid-beat at that moment, renews the lease
    with its token, exactly what ``_Heartbeat.beat`` calls. The domain and mailbox added
    next must still reach the node before their jobs say succeeded."""
    from deploy import dirty
    from deploy.models import NodeConvergeState

    held = NodeConvergeState.objects.get(node=mail_nodes.smtp_node)
    converges = Job.objects.filter(kind="node.converge", params__node_id=mail_nodes.smtp_node.pk)
    approval = converges.order_by("-pk").first()
    assert approval is not None and approval.status == Job.SUCCEEDED
    late = dirty.Lease(
        node_id=mail_nodes.smtp_node.pk,
        owner=f"job:{approval.pk}",
        token=held.lease_token,
        generation=held.applied_generation,
    )
    late.renew()
    _client, _domain = setup_mail(cast)
    assert rcpt(mail_nodes, f"alice@{DOMAIN}")[0] == 250
    # None ended at once "coalesced" into the lease the approval converge gave back.
    coalesced = [j.pk for j in converges if (j.result or {}).get("coalesced")]
    assert not coalesced, coalesced
