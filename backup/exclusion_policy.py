"""Exclusion policies: what each customer, domain and mailbox leaves out of backups,
how they add up down the customer tree, and where each exclusion comes from.

Rows are :class:`backup.models.BackupExclusion` (one per customer, domain or mailbox).
Everything only *adds* down the tree, like a parent's word binding its subtree:

* a domain is excluded when the domain itself, or its customer or any customer above,
  is marked excluded;
* a mailbox is excluded when its domain is, or it is marked itself;
* the excluded folders of a domain are the union of the folders of every customer from
  the root down and of the domain's own list (subfolders go with their folder).

:func:`for_domains` answers for many domains with one query (lists use it, never a query
per row); :func:`describe` says the same with the source of each item, for the API and
the portal. Folder names are Maildir++ names as Courier-IMAP 5 keeps them on disk
(UTF-8, ``.`` separating subfolders, without the leading dot): :func:`clean_folders`
checks them and reports every bad one at once.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils.translation import gettext as _

from mail.models import Domain
from tenants.models import Customer

from .exclusions import NOTHING, Exclusions
from .models import BackupExclusion

#: At most this many folders per level; a UTF-8 folder name at most this many bytes.
MAX_FOLDERS = 50
MAX_FOLDER_BYTES = 200
#: Beyond this many domains :func:`for_domains` reads every domain and mailbox row.
BULK_DOMAINS = 1000


def ancestor_paths(path: str) -> list[str]:
    """``/1/4/9/`` -> ``["/1/", "/1/4/", "/1/4/9/"]`` (root first)."""
    ids = [part for part in path.split("/") if part]
    return ["/" + "/".join(ids[: i + 1]) + "/" for i in range(len(ids))]


# --------------------------------------------------------------------------- validation


def _folder_problem(name: str) -> str | None:
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        return _("contains a control character")
    if "/" in name or "\\" in name:
        return _("must not contain / or \\")
    if name.upper() == "INBOX":
        return _("the inbox cannot be excluded on its own (exclude the mailbox instead)")
    if name.startswith(".") or name.endswith(".") or ".." in name:
        return _("must not start or end with a dot or contain two dots in a row")
    if name != name.strip():
        return _("must not start or end with a space")
    if len(name.encode()) > MAX_FOLDER_BYTES:
        return _("is longer than %(max)s bytes") % {"max": MAX_FOLDER_BYTES}
    return None


def clean_folders(value: Any) -> list[str]:
    """Checked, normalised (NFC, ``INBOX.`` prefix dropped), de-duplicated folder names.

    Raises ``ValidationError({"folders": [...]})`` listing every bad name at once.
    """
    if not isinstance(value, list | tuple):
        raise ValidationError({"folders": [_("Expected a list of folder names.")]})
    errors: list[str] = []
    names: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item:
            errors.append(_("%(name)r: not a folder name") % {"name": item})
            continue
        name = unicodedata.normalize("NFC", item)
        if name.upper().startswith("INBOX."):
            name = name[len("INBOX.") :]
        problem = _folder_problem(name)
        if problem:
            errors.append(f"{item!r}: {problem}")
        elif name not in names:
            names.append(name)
    if len(names) > MAX_FOLDERS:
        errors.append(_("At most %(max)s folders.") % {"max": MAX_FOLDERS})
    if errors:
        raise ValidationError({"folders": errors})
    return names


# --------------------------------------------------------------------------- effective


def _rows(domains: list[Domain]) -> list[dict[str, Any]]:
    """Every exclusion row that bears on ``domains``: one query."""
    paths: set[str] = set()
    for domain in domains:
        paths.update(ancestor_paths(domain.customer_path))
    ids = [d.pk for d in domains]
    if len(ids) > BULK_DOMAINS:
        # The scheduler asks for every placed domain: exclusion rows are few next to
        # domains, so reading all domain and mailbox rows beats a huge IN list.
        wanted = Q(customer__path__in=paths) | Q(customer__isnull=True)
    else:
        wanted = Q(customer__path__in=paths) | Q(domain_id__in=ids) | Q(mailbox__domain_id__in=ids)
    return list(
        BackupExclusion.objects.filter(wanted).values(
            "excluded",
            "folders",
            "customer_id",
            "customer__name",
            "customer__path",
            "domain_id",
            "domain__name",
            "mailbox_id",
            "mailbox__domain_id",
            "mailbox__local_part",
            "mailbox__email",
        )
    )


def _source(row: dict[str, Any]) -> dict[str, Any]:
    if row["customer_id"]:
        return {"level": "customer", "id": row["customer_id"], "name": row["customer__name"]}
    if row["domain_id"]:
        return {"level": "domain", "id": row["domain_id"], "name": row["domain__name"]}
    return {"level": "mailbox", "id": row["mailbox_id"], "name": row["mailbox__email"]}


class _Index:
    """Exclusion rows by customer path, domain id and (mailboxes) domain id, so each
    domain looks up only its own rows: linear in domains, whatever the number of rows."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.by_path: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.by_domain: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            if row["customer_id"]:
                self.by_path[row["customer__path"]].append(row)
            else:  # domain rows first, then that domain's mailboxes (sorted below)
                self.by_domain[row["domain_id"] or row["mailbox__domain_id"]].append(row)

    def describe(self, domain: Domain) -> dict[str, Any]:
        """The effective exclusions of ``domain`` with sources."""
        # Root first, then the domain, then its mailboxes: the first source of a thing wins.
        mine = [r for path in ancestor_paths(domain.customer_path) for r in self.by_path[path]]
        mine += sorted(self.by_domain.get(domain.pk, ()), key=lambda r: bool(r["mailbox_id"]))
        result: dict[str, Any] = {"domain": None, "folders": [], "mailboxes": []}
        seen: set[str] = set()
        for row in mine:
            source = _source(row)
            if row["mailbox_id"]:
                if row["excluded"]:
                    result["mailboxes"].append(
                        {"local_part": row["mailbox__local_part"].lower(), "source": source}
                    )
                continue
            if row["excluded"] and result["domain"] is None:
                result["domain"] = source
            for folder in row["folders"] or ():
                if folder not in seen:
                    seen.add(folder)
                    result["folders"].append({"name": folder, "source": source})
        return result


def _to_exclusions(described: dict[str, Any]) -> Exclusions:
    if not (described["domain"] or described["folders"] or described["mailboxes"]):
        return NOTHING
    return Exclusions(
        domain_excluded=described["domain"] is not None,
        mailboxes=frozenset(m["local_part"] for m in described["mailboxes"]),
        folders=frozenset(f["name"] for f in described["folders"]),
    )


def for_domains(domains: Iterable[Domain]) -> dict[int, Exclusions]:
    """``{domain id: Exclusions}`` for every domain given, in one query."""
    domains = list(domains)
    if not domains:
        return {}
    index = _Index(_rows(domains))
    return {d.pk: _to_exclusions(index.describe(d)) for d in domains}


def describe(domain: Domain) -> dict[str, Any]:
    """``{"domain": source|None, "folders": [{name, source}], "mailboxes": [...]}``."""
    return _Index(_rows([domain])).describe(domain)


def describe_customer(customer: Customer, *, upto_parent: bool = False) -> dict[str, Any]:
    """What the customers from the root down to ``customer`` leave out, with sources."""
    paths = customer.ancestor_paths
    if upto_parent:
        paths = paths[:-1]
    rows = list(
        BackupExclusion.objects.filter(customer__path__in=paths)
        .order_by("customer__depth")
        .values("excluded", "folders", "customer_id", "customer__name")
    )
    result: dict[str, Any] = {"excluded": None, "folders": []}
    seen: set[str] = set()
    for row in rows:
        source = {"level": "customer", "id": row["customer_id"], "name": row["customer__name"]}
        if row["excluded"] and result["excluded"] is None:
            result["excluded"] = source
        for folder in row["folders"] or ():
            if folder not in seen:
                seen.add(folder)
                result["folders"].append({"name": folder, "source": source})
    return result


def own(**target: Any) -> BackupExclusion | None:
    """The row of one customer, domain or mailbox (``customer=...`` etc.), if any."""
    return BackupExclusion.objects.filter(**target).first()


def status(exclusions: Exclusions, local_part: str | None = None) -> dict[str, Any]:
    """What a snapshot list shows as "excluded" for a domain, or one of its mailboxes."""
    shown: dict[str, Any] = {"domain": exclusions.domain_excluded}
    if local_part is None:
        shown["mailboxes"] = sorted(exclusions.mailboxes)
    else:
        shown["mailbox"] = exclusions.mailbox_excluded(local_part)
    shown["folders"] = sorted(exclusions.folders)
    return shown


def by_domain_ids(domain_ids: Iterable[int]) -> dict[int, Exclusions]:
    """:func:`for_domains` from ids (one query for the domains, one for the rows)."""
    ids = sorted({i for i in domain_ids if i})
    if not ids:
        return {}
    return for_domains(Domain.objects.filter(pk__in=ids).only("pk", "customer_path"))


__all__ = [
    "by_domain_ids",
    "clean_folders",
    "describe",
    "describe_customer",
    "for_domains",
    "own",
    "status",
]
