"""Permanent deletion of a mailbox or a domain (issue 13, item 8), for the ``purge_mailbox``
and ``purge_domain`` commands.

:func:`plan` gathers what will go: the live Maildir on the IMAP node, every copy each
registered :class:`~backup.holders.CopyHolder` reports (with what else goes with it), and
the database rows. :func:`execute` then, in this order:

1. records a :class:`~backup.models.Purge` row (a re-run after a crash finds it and resumes);
2. removes the live Maildir (for a domain: destroys its dataset with every snapshot);
3. destroys every copy the holders find *now* (found again, not the list shown, so a
   snapshot the scheduler took in between is not missed);
4. deletes the mailbox (or the domain with its mailboxes and aliases) through the mail
   actions, so Postfix and Courier stop accepting and serving it;
5. removes the Maildir once more (mail delivered between 2 and 4) and asks the holders
   again, then records the purge as finished, audited as "permanently purged" with the
   names of what was destroyed, never any content.

Every step is idempotent: a missing Maildir, snapshot or object is already gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from deploy.desired import DEFAULT_SETTINGS
from deploy.services.postfix import safe
from mail import actions as mail_actions
from mail.models import Alias, Domain, Mailbox
from servers.models import Node
from ums import auditing

from .holders import HeldCopy, holders
from .models import Purge
from .purge_holders import dataset_of, node_of


class PurgeError(Exception):
    """The purge cannot start (unknown name) or a step failed; re-run to resume."""


@dataclass
class Plan:
    domain: Domain  # unsaved when the row is already gone
    local_part: str | None
    node: Node | None
    mailbox: Mailbox | None
    copies: list[HeldCopy] = field(default_factory=list)
    resuming: Purge | None = None

    @property
    def name(self) -> str:
        return f"{self.local_part}@{self.domain.name}" if self.local_part else self.domain.name


def _mail_root() -> str:
    conf = {**DEFAULT_SETTINGS, **getattr(settings, "UMS_CONVERGE", {})}
    return str(conf.get("mail_root") or "/var/mail/vhosts").rstrip("/")


def _open_purge(domain_name: str, local_part: str) -> Purge | None:
    return Purge.objects.filter(
        domain_name=domain_name, local_part=local_part, finished_at__isnull=True
    ).first()


def plan(domain_name: str, local_part: str | None = None) -> Plan:
    """What a purge of ``local_part@domain_name`` (or the domain) would destroy."""
    try:
        domain_name = safe.domain(domain_name.strip().lower())
        if local_part is not None:
            local_part = safe.local_part(local_part.strip().lower())
    except ValueError as exc:
        raise PurgeError(str(exc)) from exc
    resuming = _open_purge(domain_name, local_part or "")
    domain = Domain.objects.filter(name=domain_name).select_related("customer").first()
    mailbox = None
    if domain is not None and local_part is not None:
        mailbox = Mailbox.objects.filter(domain=domain, local_part=local_part).first()
    if domain is None:
        if resuming is None and not _known_elsewhere(domain_name, local_part):
            raise PurgeError(f"unknown domain {domain_name!r}: nothing to purge")
        domain = Domain(name=domain_name, customer_path=resuming.customer_path if resuming else "")
    result = Plan(domain, local_part, node_of(domain), mailbox, resuming=resuming)
    for holder in holders():
        result.copies.extend(holder.find(domain, local_part))
    return result


def _known_elsewhere(domain_name: str, local_part: str | None) -> bool:
    """A domain row already deleted the ordinary way may still have copies: purge them."""
    from .models import Export, Snapshot

    return (
        Export.objects.filter(domain_name=domain_name).exists()
        or Snapshot.objects.filter(dataset__endswith=f"/{domain_name}").exists()
    )


def describe(p: Plan) -> list[str]:
    """The listing shown before confirmation."""
    lines = [f"Permanent deletion of {p.name}. This cannot be undone."]
    if p.resuming:
        lines.append(f"Resuming the purge started at {p.resuming.started_at:%Y-%m-%d %H:%M} UTC.")
    where = f" on {p.node.hostname}" if p.node else " (no IMAP node known: nothing on a node)"
    if p.local_part:
        lines.append(f"- the Maildir {_mail_root()}/{p.domain.name}/{p.local_part}{where}")
    else:
        dataset = dataset_of(p.domain)
        lines.append(f"- every Maildir under {_mail_root()}/{p.domain.name}{where}")
        if dataset:
            lines.append(f"- the ZFS dataset {dataset} with all its snapshots")
    for copy in p.copies:
        lines.append(f"- {copy.description}")
        lines.extend(f"    also removes: {item}" for item in copy.also_removes)
    if p.local_part and p.mailbox:
        lines.append(f"- the mailbox {p.mailbox.email} in the database")
    elif p.local_part is None and p.domain.pk:
        count = Mailbox.objects.filter(domain=p.domain).count()
        lines.append(f"- the domain {p.domain.name} and its {count} mailbox(es) in the database")
    return lines


def _remove_live(p: Plan, log: Callable[[str], None]) -> None:
    from deploy.nodes import session

    if p.node is None:
        return
    folder = f"{_mail_root()}/{safe.domain(p.domain.name)}"
    with session(p.node) as conn:
        if p.local_part:
            local = safe.local_part(p.local_part)
            # Its excluded folders (backup/exclude_layout.py) live beside, in the
            # domain's .ums-excluded dataset: they go first, then the mailbox.
            conn.run(["rm", "-rf", "--", f"{folder}/.ums-excluded/{local}"]).check()
            folder = f"{folder}/{local}"
        else:
            dataset = dataset_of(p.domain)
            if dataset:
                _destroy_dataset(conn, dataset)
        conn.run(["rm", "-rf", "--", folder]).check()
        if conn.run(["test", "-e", folder]).ok:
            raise PurgeError(f"{folder} is still there on {p.node.hostname}")
    log(f"removed {folder} on {p.node.hostname}")


def _destroy_dataset(conn: Any, dataset: str) -> None:
    """``zfs destroy -R -f`` of the domain's dataset. ``-f`` unmounts it even while a
    process still has a file open in it (an IMAP session of the purged domain): the data is
    being destroyed on purpose. "busy" can still come back while the unmount settles (seen
    on zfs-fuse), so a few short retries before giving up with the node's words."""
    for attempt in range(5):
        result = conn.run(["zfs", "destroy", "-R", "-f", dataset])
        if result.ok or "does not exist" in result.stderr:
            return
        if "busy" not in result.stderr or attempt == 4:
            raise PurgeError(f"zfs destroy {dataset}: {result.stderr.strip()}")
        time.sleep(1 + attempt)


def _destroy_copies(p: Plan, log: Callable[[str], None]) -> list[str]:
    destroyed = []
    for holder in holders():
        for copy in holder.find(p.domain, p.local_part):
            holder.destroy(copy, p.domain, p.local_part, log)
            destroyed.append(copy.description)
    return destroyed


def _delete_rows(p: Plan) -> None:
    """Through the mail actions (audited, announced to converge) as the system."""
    if p.local_part:
        mailbox = Mailbox.objects.filter(domain__name=p.domain.name, local_part=p.local_part)
        if mailbox.exists():
            mail_actions.delete_mailbox(actor=None, mailbox=mailbox.get())
        return
    domain = Domain.objects.filter(name=p.domain.name).first()
    if domain is None:
        return
    for mailbox in Mailbox.objects.filter(domain=domain):
        mail_actions.delete_mailbox(actor=None, mailbox=mailbox)
    for alias in Alias.objects.filter(domain=domain, is_system=False):
        mail_actions.delete_alias(actor=None, alias=alias)
    mail_actions.delete_domain(actor=None, domain=domain)


def _step(purge: Purge, name: str) -> None:
    Purge.objects.filter(pk=purge.pk).update(done=[*purge.done, name])
    purge.done.append(name)


def execute(p: Plan, log: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Carry out ``p``; what was destroyed. Safe to run again at any point."""
    purge = p.resuming
    if purge is None:
        with transaction.atomic():
            purge = Purge.objects.create(
                domain_name=p.domain.name,
                local_part=p.local_part or "",
                customer_path=p.domain.customer_path,
                node=p.node,
            )
            auditing.record(
                "backup.purge.start",
                object_type="mail.mailbox" if p.local_part else "mail.domain",
                object_repr=p.name,
                customer_path=p.domain.customer_path or None,
                extra={"listed": describe(p)[1:]},
                actor=None,
            )
    elif p.node is None and purge.node_id:
        p.node = purge.node
    _remove_live(p, log)
    _step(purge, "maildir")
    destroyed = _destroy_copies(p, log)
    _step(purge, "copies")
    _delete_rows(p)
    _step(purge, "database")
    _remove_live(p, log)  # anything delivered before Postfix heard of the deletion
    destroyed += _destroy_copies(p, log)
    with transaction.atomic():
        Purge.objects.filter(pk=purge.pk).update(finished_at=timezone.now())
        auditing.record(
            "backup.purge.done",
            object_type="mail.mailbox" if p.local_part else "mail.domain",
            object_repr=p.name,
            customer_path=p.domain.customer_path or None,
            extra={"permanently_purged": True, "destroyed": destroyed, "steps": purge.done},
            actor=None,
        )
    return {"name": p.name, "destroyed": destroyed, "resumed": p.resuming is not None}
