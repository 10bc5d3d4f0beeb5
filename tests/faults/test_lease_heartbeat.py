"""A converge's heartbeat that beats once more after the converge gave its lease back.

The job's heartbeat thread renews the node's lease while the converge runs. Seen in
test_mail_auth: the SMTP node's approval converge ended (lease freed) while a beat was
under way; the beat extended the freed lease (same token, no owner) for
UMS_CONVERGE_LEASE_SECONDS, and every converge of the node in that time ended at once as
"coalesced" and succeeded: the domain and mailbox added next never reached the node, and
its first mail was refused "Relay access denied".
"""

from __future__ import annotations

import pytest
from django.utils import timezone

from deploy import dirty
from deploy.models import NodeConvergeState
from ums import jobs as jobs_module
from ums.models import Job

# The same cast: an SMTP node, jobs recorded instead of dispatched.
from .test_converge_intents import dispatched, smtp  # noqa: F401

pytestmark = pytest.mark.django_db


def running_converge(node_pk: int) -> tuple[Job, jobs_module._Heartbeat, dirty.Lease]:
    """A converge job as the runner has it: running, its lease renewed by its heartbeat."""
    job = Job.objects.create(
        kind="node.converge", title="t", customer_path="/", status=Job.RUNNING, attempts=1
    )
    lease = dirty.acquire(node_pk, owner=f"job:{job.pk}")
    assert lease is not None
    heartbeat = jobs_module._Heartbeat(job.pk, 1)
    heartbeat.callbacks.append(lease.renew)
    return job, heartbeat, lease


@pytest.mark.parametrize("end", ["succeeded", "failed", "released"])
def test_a_beat_after_the_converge_freed_its_lease_does_not_hold_the_node(
    smtp,  # noqa: F811
    end: str,
) -> None:
    dirty.bump([smtp.pk], reason="domain added")
    job, heartbeat, lease = running_converge(smtp.pk)
    heartbeat.beat()  # while it runs: renews
    assert dirty.lease_owner(smtp.pk) == f"job:{job.pk}"
    if end == "succeeded":
        assert dirty.succeeded(lease)
    elif end == "failed":
        dirty.failed(lease, "probe failed")
    else:
        dirty.release(lease)
    # The job is still RUNNING until the runner records its outcome: a beat now still
    # passes the job check and calls the lease's renew.
    heartbeat.beat()
    assert not lease.renew()
    assert dirty.lease_owner(smtp.pk) is None

    # The next change's converge gets the node instead of being coalesced into nobody.
    dirty.bump([smtp.pk], reason="mailbox added")
    following = dirty.acquire(smtp.pk, owner="job:2")
    assert following is not None and following.token == lease.token + 1


def test_a_lease_left_without_an_owner_is_free(smtp) -> None:  # noqa: F811
    """However an unowned lease came to be (an older controller's late beat), it holds
    nobody's work: the next converge takes it rather than coalescing into "?"."""
    dirty.bump([smtp.pk])
    lease = dirty.acquire(smtp.pk, owner="job:1")
    assert lease is not None and dirty.succeeded(lease)
    NodeConvergeState.objects.filter(node=smtp).update(
        lease_expires_at=timezone.now() + dirty.lease_length()
    )
    assert dirty.acquire(smtp.pk, owner="job:2") is not None
