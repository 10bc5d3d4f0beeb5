"""Restore from a snapshot: what may be asked (validated before anything reaches a node),
the folder plan, and the action that starts the job.

What can be restored: a whole domain (every mailbox of it that the snapshot holds), one
mailbox, or one folder of a mailbox (with its subfolders; ``INBOX`` is the inbox alone).
Folder names are Courier's Maildir++ names under ``INBOX`` (``Sent``, ``Archive.2025``;
``.`` separates levels; Courier-IMAP 5 keeps them in UTF-8 on disk).

Modes:

* ``new_folder`` (default): the snapshot's folders come back under a new folder
  ``Restored YYYY-MM-DD`` (the snapshot's date; ``Restored YYYY-MM-DD (2)`` ... if that
  name is taken): its inbox into that folder itself, ``Sent`` into
  ``Restored YYYY-MM-DD.Sent``. Nothing existing is touched.
* ``in_place``: each folder's messages that are in the snapshot but missing now are
  copied back into the folder (a deleted folder is recreated); messages present in both
  get the flags they had in the snapshot (seen, answered, flagged, deleted). Mail that
  arrived since, and messages moved or copied elsewhere, stay; nothing is deleted.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from mail.models import Domain, Mailbox
from tenants import permissions as perms
from ums import auditing, jobs
from ums.actions import action, require_in_scope, require_permission
from ums.models import Job

from .models import Snapshot

RESTORE_JOB = "backup.restore"
FOLDERS_JOB = "backup.snapshot_folders"
NEW_FOLDER, IN_PLACE = "new_folder", "in_place"
MODES = {
    NEW_FOLDER: gettext_lazy("Into a new folder “Restored <date>” (nothing is overwritten)"),
    IN_PLACE: gettext_lazy(
        "In place: copy back messages missing from the folder and reset the flags of "
        "messages present in both to the snapshot's"
    ),
}
MAX_FOLDER = 200
# Control characters, "/" (a path separator on the node) and "\" are never part of a
# Maildir++ folder name; "." separates levels, so no level may be empty.
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]")


def clean_folder(value: str | None) -> str | None:
    """The Maildir++ folder name (``""`` for the inbox) or ``None`` (whole mailbox).

    Raises ``ValidationError`` with a sentence saying what is wrong.
    """
    if value is None:
        return None
    name = value.strip()
    if not name:
        return None
    if len(name) > MAX_FOLDER:
        raise ValidationError(_("A folder name has at most %(n)d characters.") % {"n": MAX_FOLDER})
    if name.upper() == "INBOX":
        return ""
    if name[:6].upper() == "INBOX.":
        name = name[6:]
    if _BAD_CHARS.search(name):
        raise ValidationError(_("A folder name cannot contain “/”, “\\” or control characters."))
    if any(not part or part.strip() != part for part in name.split(".")):
        raise ValidationError(
            _("Levels of a folder name are separated by single dots, e.g. “Archive.2025”.")
        )
    return name


def folder_dir(name: str) -> str:
    """The Maildir++ directory of a folder name (``""``: the Maildir itself)."""
    return f".{name}" if name else ""


def selects(name: str | None, directory: str) -> bool:
    """Whether snapshot folder ``directory`` is part of a restore of folder ``name``."""
    if name is None:
        return True
    if name == "":
        return directory == ""
    return directory == f".{name}" or directory.startswith(f".{name}.")


def restored_date(snapshot: Snapshot) -> datetime.date:
    return timezone.localtime(snapshot.taken_at).date()


def target_folder(date: datetime.date, live: list[str]) -> str:
    """``.Restored YYYY-MM-DD`` or the first free ``.Restored YYYY-MM-DD (n)``: free means
    neither the folder nor any folder below it exists."""
    base = f".Restored {date.isoformat()}"
    for n in range(1, 1000):
        name = base if n == 1 else f"{base} ({n})"
        if not any(d == name or d.startswith(name + ".") for d in live):
            return name
    raise ValidationError(_("Too many restored folders of this date."))


def plan(mode: str, folder: str | None, source: list[str], target: str) -> list[list[Any]]:
    """``[[snapshot folder or None, live folder], ...]`` for one mailbox.

    ``source`` lists the snapshot's folder directories; the caller checked ``folder`` is
    among them. In a new folder the ``Restored`` folder itself always exists (the inbox's
    messages, or empty as the parent of what was restored), published after the others.
    """
    chosen = [d for d in source if selects(folder, d)]
    if mode == IN_PLACE:
        return [[d, d] for d in chosen]
    # The Restored folder itself last: until the end a failed restore shows nothing of it.
    parent = ["", target] if "" in chosen else [None, target]
    return [[d, target + d] for d in chosen if d] + [parent]


def describe(mailbox: Mailbox | None, folder: str | None, domain: Domain) -> str:
    if mailbox is None:
        return domain.name
    if folder is None:
        return mailbox.email
    return f"{mailbox.email} / {folder or 'INBOX'}"


@action
def start_restore(
    *,
    actor: Any,
    snapshot: Snapshot,
    mailbox: Mailbox | None = None,
    folder: str | None = None,
    mode: str = NEW_FOLDER,
) -> Job:
    """Restore a domain, mailbox or folder from ``snapshot`` as a job (every error at once)."""
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(snapshot, actor)
    errors: dict[str, list[str]] = {}
    domain = snapshot.domain
    if domain is None:
        errors.setdefault("snapshot", []).append(_("The domain of this snapshot was deleted."))
    if mode not in MODES:
        errors.setdefault("mode", []).append(_("Choose new_folder or in_place."))
    if mailbox is not None:
        require_in_scope(mailbox, actor)
        if domain is not None and mailbox.domain_id != domain.pk:
            errors.setdefault("mailbox", []).append(
                _("This mailbox is not in the snapshot's domain.")
            )
    try:
        folder = clean_folder(folder)
    except ValidationError as exc:
        errors.setdefault("folder", []).extend(exc.messages)
    if folder is not None and mailbox is None:
        errors.setdefault("folder", []).append(_("A folder is restored from one mailbox."))
    if errors:
        raise ValidationError(errors)
    assert domain is not None
    what = describe(mailbox, folder, domain)
    job = jobs.enqueue(
        RESTORE_JOB,
        actor=actor,
        title=_("Restore %(what)s from %(snapshot)s") % {"what": what, "snapshot": snapshot.name},
        customer=domain.customer,
        target=mailbox or domain,
        params={
            "snapshot_id": snapshot.pk,
            "mailbox_id": mailbox.pk if mailbox else None,
            "folder": folder,
            "mode": mode,
        },
    )
    auditing.record(
        "snapshot.restore",
        obj=mailbox or domain,
        extra={
            "job": job.pk,
            "snapshot": f"{snapshot.dataset}@{snapshot.name}",
            "folder": folder,
            "mode": mode,
        },
    )
    return job


@action
def start_folder_listing(*, actor: Any, snapshot: Snapshot, mailbox: Mailbox) -> Job:
    """A job reads the folders ``mailbox`` has in ``snapshot`` (for choosing what to
    restore); nothing changes, so no audit record."""
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(snapshot, actor)
    require_in_scope(mailbox, actor)
    if mailbox.domain_id != snapshot.domain_id:
        raise ValidationError({"mailbox": [_("This mailbox is not in the snapshot's domain.")]})
    return jobs.enqueue(
        FOLDERS_JOB,
        actor=actor,
        title=_("Folders of %(mailbox)s in %(snapshot)s")
        % {"mailbox": mailbox.email, "snapshot": snapshot.name},
        customer=mailbox.domain.customer,
        target=mailbox,
        params={"snapshot_id": snapshot.pk, "mailbox_id": mailbox.pk},
    )
