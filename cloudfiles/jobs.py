"""The job that revokes external file links on every cloud files node serving a scope.

Safe to run again after a worker died: it lists the links that still exist and deletes
those, so a second run deletes what the first did not get to (and counts only that).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils.translation import gettext_noop

from deploy import desired
from deploy.nodes import session
from deploy.services.nextcloud import occ, ocs
from deploy.services.nextcloud.service import occ_prefix
from mail.models import Mailbox
from servers.models import Node
from ums import auditing, context, jobs
from ums.models import Job

from .actions import REVOKE_JOB
from .state import ROLE


def nodes_for(path: str) -> list[Node]:
    """Cloud files nodes whose tree holds ``path`` (an ancestor's node or one inside it)."""
    ids = [part for part in path.split("/") if part]
    ancestors = ["/" + "/".join(ids[: i + 1]) + "/" for i in range(len(ids))]
    return list(
        Node.objects.filter(status__in=desired.SERVING_STATUSES, roles__contains=[ROLE])
        .filter(Q(customer_path__in=ancestors) | Q(customer_path__startswith=path))
        .order_by("pk")
    )


def _revoke_on_node(
    node: Node, wanted: set[str], reporter: jobs.Reporter
) -> tuple[ocs.RevokeResult, int]:
    """Revoke the links of the enabled accounts among ``wanted`` on one node; the result
    and how many accounts were skipped because they are disabled (they cannot sign in)."""
    conf = desired.settings_for(node)
    prefix = occ_prefix(conf)
    url = ocs.base_url(desired.node_view(node), conf)
    with session(node) as conn:

        def run(args: list[str]) -> str:
            result = conn.run([*prefix, *args], timeout=600)
            if not result.ok:
                raise ocs.OcsError(f"occ {args[0]}: {(result.stderr or result.stdout).strip()}")
            return result.stdout

        facts = occ.read_facts(run, [])
        present = sorted(uid for uid in facts.users if uid in wanted)
        active = [uid for uid in present if facts.users[uid].get("enabled", True)]
        done = 0
        reporter.progress(0, len(active))

        def step(uid: str, revoked: int) -> None:
            nonlocal done
            done += 1
            reporter.progress(done, len(active))
            if revoked:
                reporter.say(
                    gettext_noop("%(user)s: %(count)s link(s) revoked"), user=uid, count=revoked
                )

        result = ocs.revoke_external_links(
            conn,
            prefix,
            url,
            active,
            verify=bool(conf.get("nextcloud_tls_verify", True)),
            progress=step,
        )
    return result, len(present) - len(active)


@jobs.handler(REVOKE_JOB)
def run_revoke(job: Job, reporter: jobs.Reporter) -> dict[str, Any]:
    path = str(job.params.get("customer_path") or "/")
    email = str(job.params.get("email") or "")
    mailboxes = Mailbox.objects.filter(customer_path__startswith=path)
    if email:
        mailboxes = mailboxes.filter(email=email)
    wanted = set(mailboxes.values_list("email", flat=True))
    totals = {"revoked": 0, "kept": 0, "users": 0, "skipped": 0, "nodes": 0}
    for node in nodes_for(path):
        result, skipped = _revoke_on_node(node, wanted, reporter)
        totals["revoked"] += result.revoked
        totals["kept"] += result.kept
        totals["users"] += result.users
        totals["skipped"] += skipped
        totals["nodes"] += 1
    reporter.say(
        gettext_noop("%(count)s external link(s) revoked for %(users)s user(s)"),
        count=totals["revoked"],
        users=totals["users"],
    )
    actor = jobs._actor_for(job)
    with context.acting_as(actor), transaction.atomic():
        auditing.record(
            "files.links.revoked",
            object_type=job._meta.label_lower,
            object_id=job.pk,
            object_repr=job.title,
            customer_path=path,
            extra={**totals, "scope": job.params.get("scope"), "email": email},
            actor=actor,
        )
    return totals
