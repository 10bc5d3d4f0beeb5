"""The RPO of a failover in each zone mode, on issue 14's layout: three IMAP nodes across
two zones (A and C in the first, B in the second), one SMTP node per zone, zfs-fuse pools,
Postfix and Courier; one set of nodes for both modes (the zone mode is switched between
the cases: node tests are slow).

Each case: tokens mailed through both zones' SMTP nodes and acknowledged by the primary
(stored in its Maildir) before a sync, the sync, more tokens acknowledged after it, then
the primary is killed (its sshd and every daemon of its namespace: zfs-fuse, Postfix,
Courier), mail is sent to both SMTP nodes while it is down, and one click fails over.
Proved, as the README states for both modes ("What a failover can lose"):

* every token acknowledged before the snapshot of the last completed sync reads back over
  IMAPS on the new primary; every token acknowledged after it does not: the loss window is
  exactly [snapshot of the last completed sync, death of the primary], its length is the
  replica's lag the API showed at the failure, and it is under the policy's sync interval
  plus one sync pass;
* mail sent during the failover to either zone's SMTP node is deferred, then delivered on
  the new primary (never bounced);
* the fenced old primary never serves: it is dead, and when it comes back (case 1) its
  converge sets its copy read-only and unmounted and its Courier no longer knows the domain.

HOT-WARM (case 1): the one-click failover goes to the warm zone's replica (B), and the
other zone's SMTP node is the lower-priority MX. HOT-HOT (case 2, after switching both
zones): MX records of equal priority, and the one click takes the most recently synced
replica, whatever its zone.
"""

from __future__ import annotations

import datetime
import secrets
from dataclasses import dataclass, field

import pytest
from django.urls import reverse
from django.utils import timezone

from deploy import dirty
from deploy.models import DomainPlacement
from replication import tasks
from replication.models import DomainReplica
from servers import actions as server_actions
from servers.choices import Redundancy
from servers.models import Node
from tests.converge.fleet import Fleet
from tests.converge.test_mail_store import PASSWORD, _failed_jobs
from tests.fixtures import Cast, token_client
from ums import jobs
from ums.models import Job

from .nodes import (
    DOMAIN,
    ZA,
    ZB,
    ZC,
    ZS1,
    ZS2,
    bring_back,
    imaps_bodies,
    send,
    wait_delivered,
    wait_mailbox,
    zprops,
)

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]
SYNC_INTERVAL_MINUTES = 5


@dataclass
class Case:
    """The tokens of one case, by what the README says a failover does with them."""

    kept: list[str] = field(default_factory=list)  # acknowledged before the last sync
    lost: list[str] = field(default_factory=list)  # acknowledged after it
    during: list[tuple[str, int]] = field(default_factory=list)  # (token, SMTP node)
    acked_at: dict[str, datetime.datetime] = field(default_factory=dict)


def _token(label: str) -> str:
    return f"rpo-{label}-{secrets.token_hex(5)}"


def _job(response) -> Job:
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, f"{job.title}\n{job.log}\n{job.error}"
    return job


def _acknowledge(f: Fleet, case: Case, primary: int, into: list[str], label: str) -> None:
    """One token through each zone's SMTP node, stored in the primary's Maildir."""
    for via in (ZS1, ZS2):
        token = _token(f"{label}{via}")
        send(f, f"alice@{DOMAIN}", token, via=via)
        wait_delivered(f, primary, token, smtp=via)
        case.acked_at[token] = timezone.now()  # stored at or before this instant
        into.append(token)


def _run_case(client, f: Fleet, domain_id: int, primary: int, label: str) -> tuple[int, Case]:
    """Sync, lose the primary, fail over by one click; returns the new primary's index."""
    case = Case()
    _acknowledge(f, case, primary, case.kept, f"{label}-kept")
    sync = _job(client.post(f"/api/v1/replication/domains/{domain_id}/sync-now/"))
    pass_seconds = (sync.finished_at - sync.created_at).total_seconds()
    synced = DomainReplica.objects.filter(domain_id=domain_id, state=DomainReplica.SYNCED)
    snapshot_at = min(r.synced_at for r in synced)
    _acknowledge(f, case, primary, case.lost, f"{label}-lost")
    assert all(case.acked_at[t] < snapshot_at for t in case.kept)

    f.tnodes[primary].stop()  # sshd and every daemon of the namespace
    killed_at = timezone.now()
    row = client.get(f"/api/v1/replication/domains/{domain_id}/").json()
    for via in (ZS1, ZS2):  # both zones accept it and defer it while no primary answers
        token = _token(f"{label}-during{via}")
        send(f, f"alice@{DOMAIN}", token, via=via)
        case.during.append((token, via))
    job = _job(client.post(f"/api/v1/replication/domains/{domain_id}/failover/"))
    new_node = Node.objects.get(pk=job.params["node_id"])
    new = f.nodes.index(new_node)
    assert DomainPlacement.objects.get(domain_id=domain_id).node_id == new_node.pk
    lag = next(r["lagSeconds"] for r in row["replicas"] if r["node"] == new_node.pk)

    for token, via in case.during:
        wait_delivered(f, new, token, smtp=via)
    bodies = imaps_bodies(f, new)
    missing = [t for t in case.kept + [t for t, _ in case.during] if t.encode() not in bodies]
    assert not missing, missing
    survived = [t for t in case.lost if t.encode() in bodies]
    assert not survived, survived  # acknowledged after the last completed sync
    # The loss window the README states: from the snapshot of the replica's last
    # completed sync to the death of the primary, which is the lag shown at that moment,
    # and (syncing on schedule) at most the policy's interval plus one pass.
    window = (killed_at - snapshot_at).total_seconds()
    assert all(snapshot_at < case.acked_at[t] <= killed_at for t in case.lost)
    assert abs(window - lag) < 5, (window, lag)
    assert window < SYNC_INTERVAL_MINUTES * 60 + pass_seconds, window
    for via in (ZS1, ZS2):
        log = f.tnodes[via].path("/var/spool/postfix/maillog").read_text()
        assert "status=bounced" not in log, log[-3000:]
        assert "status=deferred" in log, log[-3000:]
    print(
        f"{label}: loss window {window:.1f} s (lag shown {lag:.1f} s, sync pass "
        f"{pass_seconds:.1f} s); lost {len(case.lost)}, kept {len(case.kept)}, "
        f"deferred and delivered {len(case.during)}; new primary {new_node.hostname}"
    )
    return new, case


def _switch_mode(mode: str) -> None:
    for zone in {n.zone for n in Node.objects.select_related("zone")}:
        server_actions.update_zone(actor=None, zone=zone, redundancy=mode)


def test_rpo_per_zone_mode_across_two_zones(cast: Cast, zones_fleet: Fleet) -> None:
    jobs.load_handlers()
    f = zones_fleet
    dataset = f"{f.pools[ZA]}/mail/{DOMAIN}"
    _switch_mode(Redundancy.HOT_WARM)
    client = token_client(cast.sub_admin)
    response = client.post(
        "/api/v1/replication/policies/",
        {"customer": cast.ministry.pk, "replicas": 2,
         "syncIntervalMinutes": SYNC_INTERVAL_MINUTES},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    response = client.post(
        reverse("mail-domain-list"), {"name": DOMAIN, "customer": cast.ministry.pk}, format="json"
    )
    assert response.status_code == 201, response.content
    domain_id = response.json()["id"]
    response = client.post(
        reverse("mail-mailbox-list"),
        {"domain": domain_id, "localPart": "alice", "password": PASSWORD, "quotaMb": 40},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert DomainPlacement.objects.get(domain_id=domain_id).node_id == f.nodes[ZA].pk
    wait_mailbox(f, ZA)
    # Two replicas, the warm zone's first (HOT-WARM), both in full.
    assert {n for _, n in tasks.schedule()["assigned"]} == {
        f.nodes[ZB].hostname,
        f.nodes[ZC].hostname,
    }
    zones = client.get(f"/api/v1/replication/domains/{domain_id}/").json()["zones"]
    assert zones["mode"] == Redundancy.HOT_WARM
    priorities = {m["host"]: m["priority"] for m in zones["mx"]}
    assert priorities == {f.nodes[ZS1].hostname: 10, f.nodes[ZS2].hostname: 20}

    # Case 1, HOT-WARM: A dies; the warm zone's replica (B) takes over.
    new, _ = _run_case(client, f, domain_id, ZA, "warm")
    assert new == ZB
    # The fenced old primary never serves: back, its converge fences it first thing.
    bring_back(f, ZA)
    _ok_converge(f, ZA)
    assert zprops(f, ZA, dataset) == {"readonly": "on", "mounted": "no"}
    with pytest.raises(Exception):  # noqa: B017 (Courier on A no longer knows the domain)
        imaps_bodies(f, ZA)
    fenced = DomainReplica.objects.get(domain_id=domain_id, node=f.nodes[ZA])
    assert fenced.state == DomainReplica.FENCED  # resynced by case 2's sync (from B)

    # Case 2, HOT-HOT: both zones serve; equal-priority MX; B dies, one click fails over.
    _switch_mode(Redundancy.HOT_HOT)
    zones = client.get(f"/api/v1/replication/domains/{domain_id}/").json()["zones"]
    assert zones["mode"] == Redundancy.HOT_HOT
    assert {m["priority"] for m in zones["mx"]} == {10}
    new, _ = _run_case(client, f, domain_id, ZB, "hot")
    assert new in (ZA, ZC)
    unexpected = [
        j
        for j in _failed_jobs()
        if not (
            (f.nodes[ZA].hostname in j or f.nodes[ZB].hostname in j)
            and ("Connection refused" in j or "unavailable" in j.lower())
        )
    ]
    assert not unexpected, unexpected


def _ok_converge(f: Fleet, index: int) -> None:
    node = f.nodes[index]
    assert dirty.is_dirty(node.pk)
    job = dirty.enqueue(node, reason="back")
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
