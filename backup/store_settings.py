"""Per mail store settings: one IMAP node's ZFS compression, dedup and snapshot policy
override, on top of the global ``UMS_NODE_SETTINGS``.

They reach the node through the ordinary desired-state converge: :func:`node_overrides`
is registered with :data:`deploy.desired.NODE_OVERRIDES` (``deploy`` may not import
``backup``), so ``desired.build`` renders the node's ``mail_store_compression`` and
``mail_store_dedup`` from here, the converge validates them with every other setting, and
the ZFS service sets them on every domain dataset. A change bumps the node's desired
generation in the same transaction (:func:`deploy.dirty.bump`), so the reconciler
converges it even when the job queued after commit is lost.

Compression values are those the node's ZFS understands: zfs-fuse 0.7 (pool version 23;
``storage_service`` "zfs-fuse", the default) knows ``on off lzjb gzip gzip-1..9 zle``;
OpenZFS (any other storage service) adds ``lz4`` and ``zstd``/``zstd-1..19``. Dedup is
never turned on below 256 GB of memory whatever is set here (the ZFS service's own rule,
:func:`deploy.services.zfs.dedup_allowed`); setting ``on`` for a node that reported less
is refused outright, so the portal does not promise what converge will not do.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from deploy.services.zfs import DEDUP_MIN_MEMORY_BYTES
from servers.models import Node
from tenants import permissions as perms
from ums import auditing, scoping
from ums.actions import action, require_in_scope, require_permission

from .choices import MAX_KEEP
from .models import MailStoreSettings

COMMON_COMPRESSION = ("on", "off", "lzjb", "gzip", *(f"gzip-{n}" for n in range(1, 10)), "zle")
OPENZFS_COMPRESSION = ("lz4", "zstd", *(f"zstd-{n}" for n in range(1, 20)))
DEDUP_CHOICES = ("auto", "on", "off")
POLICY_FIELDS = ("enabled", "hourly_keep", "daily_keep", "monthly_keep")
TIER_FIELDS = ("tier_days", "tier_kind", "tier_path", "tier_target", "tier_recall")
FIELDS = ("compression", "dedup", *POLICY_FIELDS, *TIER_FIELDS)
#: Settings of this model -> the ``UMS_NODE_SETTINGS`` key the ZFS service reads.
NODE_KEYS = {"compression": "mail_store_compression", "dedup": "mail_store_dedup"}


def is_openzfs(node: Node) -> bool:
    return (node.storage_service or "zfs-fuse") != "zfs-fuse"


def compression_choices(node: Node) -> tuple[str, ...]:
    """What ``compression`` may be on this node."""
    if is_openzfs(node):
        return (*COMMON_COMPRESSION, *OPENZFS_COMPRESSION)
    return COMMON_COMPRESSION


def problems(node: Node, values: dict[str, Any]) -> dict[str, list[str]]:
    """Every reason ``values`` cannot be this node's settings, by field."""
    errors: dict[str, list[str]] = {}
    compression = values.get("compression")
    if compression and compression not in compression_choices(node):
        errors["compression"] = [
            _("%(value)s is not a compression this node's ZFS supports (%(choices)s).")
            % {"value": compression, "choices": ", ".join(compression_choices(node))}
        ]
    dedup = values.get("dedup")
    if dedup and dedup not in DEDUP_CHOICES:
        errors["dedup"] = [_("Choose auto, on or off (empty: the global setting).")]
    elif dedup == "on" and node.memory_mb and node.memory_mb * 1024**2 <= DEDUP_MIN_MEMORY_BYTES:
        errors["dedup"] = [
            _(
                "Deduplication needs more than 256 GB of memory (its table must fit in RAM); "
                "this node reported %(gb)s GB."
            )
            % {"gb": round(node.memory_mb / 1024, 1)}
        ]
    for field in POLICY_FIELDS[1:]:
        value = values.get(field)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 0 <= value <= MAX_KEEP[field]
        ):
            errors[field] = [
                _("Between 0 and %(max)s (empty: the customers' policy).")
                % {"max": MAX_KEEP[field]}
            ]
    errors.update(tier_problems(values))
    return errors


def tier_problems(values: dict[str, Any]) -> dict[str, list[str]]:
    """Every reason the tiering fields in ``values`` are wrong (only those given)."""
    from django.conf import settings as dj_settings

    from .choices import TierKind
    from .validators import absolute_path

    errors: dict[str, list[str]] = {}
    days = values.get("tier_days")
    if days is not None and (
        isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 36500
    ):
        errors["tier_days"] = [_("Between 1 and 36500 days (empty: no tiering).")]
    kind = values.get("tier_kind")
    if kind and kind not in TierKind.values:
        errors["tier_kind"] = [_("Choose a mounted folder or an S3 bucket (empty: no tier).")]
    path = values.get("tier_path")
    if path:
        try:
            absolute_path(path)
        except ValidationError as exc:
            errors["tier_path"] = list(exc.messages)
        else:
            root = str(
                {**getattr(dj_settings, "UMS_CONVERGE", {})}.get("mail_root") or "/var/mail/vhosts"
            ).rstrip("/")
            clean = path.rstrip("/")
            if clean == root or clean.startswith(root + "/") or root.startswith(clean + "/"):
                errors["tier_path"] = [
                    _("The tier must be outside the mail root (%(root)s).") % {"root": root}
                ]
    recall = values.get("tier_recall")
    if recall is not None and not isinstance(recall, bool):
        errors["tier_recall"] = [_("Yes or no.")]
    return errors


def tier_whole_problems(row: MailStoreSettings) -> dict[str, list[str]]:
    """What the saved combination lacks: a kind needs its folder or its S3 target."""
    from .choices import TargetKind, TierKind

    errors: dict[str, list[str]] = {}
    if row.tier_days and not row.tier_kind:
        errors["tier_kind"] = [_("Choose where idle messages go.")]
    if row.tier_kind == TierKind.FOLDER and not row.tier_path:
        errors["tier_path"] = [_("Required for a folder tier.")]
    if row.tier_kind == TierKind.S3:
        if row.tier_target is None:
            errors["tier_target"] = [_("Required for an S3 tier.")]
        elif row.tier_target.kind != TargetKind.S3:
            errors["tier_target"] = [_("Choose a backup target of kind S3.")]
    return errors


def node_overrides(node: Any) -> dict[str, Any]:
    """The ``UMS_NODE_SETTINGS`` keys this node's own settings replace (for desired.build)."""
    row = MailStoreSettings.objects.filter(node_id=node.pk).values("compression", "dedup").first()
    if not row:
        return {}
    return {NODE_KEYS[k]: v for k, v in row.items() if v}


def policy_overrides(node_ids: Any) -> dict[int, dict[str, Any]]:
    """``{node id: {policy field: value}}`` of the snapshot fields stores set (one query)."""
    result: dict[int, dict[str, Any]] = {}
    for row in MailStoreSettings.objects.filter(node_id__in=list(node_ids)).values(
        "node_id", *POLICY_FIELDS
    ):
        own = {f: row[f] for f in POLICY_FIELDS if row[f] is not None}
        if own:
            result[row["node_id"]] = own
    return result


def describe(node: Node) -> dict[str, Any]:
    """Own values, what the node gets in effect, and the choices, for API and portal."""
    from django.conf import settings

    from deploy.desired import DEFAULT_SETTINGS

    row = MailStoreSettings.objects.filter(node=node).first()
    own = {f: getattr(row, f, None) for f in FIELDS if f != "tier_target"}
    own["tier_target"] = getattr(row, "tier_target_id", None)
    for field in ("compression", "dedup", "tier_kind", "tier_path"):
        own[field] = own[field] or ""
    own["tier_recall"] = bool(own["tier_recall"])
    conf = {**DEFAULT_SETTINGS, **getattr(settings, "UMS_CONVERGE", {})}
    effective = {
        "compression": own["compression"] or str(conf.get("mail_store_compression") or "on"),
        "dedup": own["dedup"] or str(conf.get("mail_store_dedup", "auto")).lower(),
    }
    return {
        "node": node.pk,
        "hostname": node.hostname,
        "own": own,
        "effective": effective,
        "compression_choices": list(compression_choices(node)),
        "memory_mb": node.memory_mb or None,
        "zfs": bool(conf.get("mail_store_pool")),
    }


# --------------------------------------------------------------------------- action

AUDIT_ACTION = "mail_store.update"


@action
def set_store_settings(*, actor: Any, node: Node, **values: Any) -> MailStoreSettings:
    """Set (blank/``None``: inherit) an IMAP node's mail store settings; a change of
    compression or dedup bumps the node's desired generation so it converges."""
    from deploy import dirty

    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(node, actor)
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise ValidationError({k: _("This field cannot be changed here.") for k in unknown})
    errors = problems(node, values)
    if "imap" not in (node.roles or ()):
        errors.setdefault(NON_FIELD_ERRORS, []).append(_("Only IMAP nodes have a mail store."))
    if errors:
        raise ValidationError(errors)
    if values.get("compression") == "gzip-6":
        # ZFS reports gzip-6 as "gzip": stored as shown, so converge finds it in step.
        values["compression"] = "gzip"
    row, created = MailStoreSettings.objects.select_for_update().get_or_create(
        node=node, defaults={"customer_path": node.customer_path}
    )
    before = auditing.snapshot(row)
    for key, value in values.items():
        if key == "tier_target":
            row.tier_target = _tier_target(actor, value)
        elif key in POLICY_FIELDS or key in ("tier_days", "tier_recall"):
            setattr(row, key, bool(value) if key == "tier_recall" else value)
        else:
            setattr(row, key, value or "")
    whole = tier_whole_problems(row)
    if whole:
        raise ValidationError(whole)
    row.save()
    old, new = auditing.diff(before, auditing.snapshot(row))
    if new or created:
        auditing.record(AUDIT_ACTION, obj=row, object_repr=node.hostname, before=old, after=new)
    if set(new) & set(NODE_KEYS) and dirty.enabled():
        # The intent is durable in this transaction; the job after commit is the fast path.
        bumped = dirty.bump([node.pk], reason="mail store settings")
        transaction.on_commit(lambda: dirty.ensure_queued(bumped, reason="mail store settings"))
    return row


def _tier_target(actor: Any, value: Any) -> Any:
    """The S3 backup target ``value`` names (an id), if the actor may use it."""
    from .models import BackupTarget

    if value in (None, ""):
        return None
    target = BackupTarget.objects.filter(pk=getattr(value, "pk", value)).first()
    if target is None or (actor is not None and not scoping.in_scope(target, actor)):
        raise ValidationError({"tier_target": [_("No such backup target.")]})
    return target


def effective_for_domain(domain: Any) -> dict[str, dict[str, Any]]:
    """The domain's snapshot policy as its node's snapshot pass applies it: the customers'
    (:func:`backup.policy.effective_policy`) with its mail store's override on top."""
    from deploy.models import DomainPlacement

    from .policy import effective_policy

    result = effective_policy(domain.customer)
    placement = DomainPlacement.objects.filter(domain=domain).select_related("node").first()
    if placement is None:
        return result
    own = policy_overrides([placement.node_id]).get(placement.node_id, {})
    source = {"level": "store", "id": placement.node_id, "name": placement.node.hostname}
    for field, value in own.items():
        result[field] = {"value": value, "source": source}
    return result
