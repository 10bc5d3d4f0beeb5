"""Enrolment tokens and node registration: how a new node joins a zone.

An administrator creates an enrolment token for a zone (N uses, expiring, revocable). The
operator runs ``bootstrapcore.sh TOKEN`` on the new node as root; the script installs the
controller's SSH key, collects the node's facts and posts them with the token to the
unauthenticated registration endpoint, which calls :func:`register_node`. The node then
waits as *pending* until an administrator approves it (which pins its host keys).

Everything the node sends is untrusted input from the network: :func:`clean_facts` checks
every value strictly before anything is written, and a refused registration writes no node.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import re
import secrets
import unicodedata
from dataclasses import dataclass, field
from typing import Any, NoReturn

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from deploy.connector.keys import InvalidKeyError, load_public_key, normalize_public_key
from tenants import permissions as perms
from ums import auditing
from ums.actions import action, recheck_in_scope, require_in_scope, require_permission

from .choices import NodeStatus
from .models import EnrolmentToken, Node, Zone

# --------------------------------------------------------------------------- tokens

TOKEN_LABEL = "umsnode"  # noqa: S105  (a label, not a secret)
_TOKEN_RE = re.compile(r"^umsnode_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
MAX_USES_LIMIT = 1000
DEFAULT_LIFETIME = datetime.timedelta(hours=24)
MAX_LIFETIME = datetime.timedelta(days=365)


def _hash_secret(secret: str) -> str:
    # 256 random bits: a fast hash is enough, there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_token() -> tuple[str, str, str]:
    """Return (prefix, secret, full token). Only shell-safe characters: [A-Za-z0-9_-]."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return prefix, secret, f"{TOKEN_LABEL}_{prefix}_{secret}"


def split_token(token: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed token string, else None."""
    match = _TOKEN_RE.fullmatch(token) if isinstance(token, str) else None
    return (match.group(1), match.group(2)) if match else None


def token_state(token: EnrolmentToken, now: datetime.datetime | None = None) -> str:
    """``active``, ``revoked``, ``expired`` or ``spent`` (what the portal and API show)."""
    now = now or timezone.now()
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at <= now:
        return "expired"
    if token.uses >= token.max_uses:
        return "spent"
    return "active"


def _check_lifetime(expires_at: datetime.datetime) -> None:
    now = timezone.now()
    if expires_at <= now:
        raise ValidationError({"expires_at": _("The expiry must be in the future.")})
    if expires_at > now + MAX_LIFETIME:
        raise ValidationError(
            {"expires_at": _("An enrolment token may be valid for at most 365 days.")}
        )


def _check_max_uses(max_uses: Any) -> None:
    if isinstance(max_uses, bool) or not isinstance(max_uses, int):
        raise ValidationError({"max_uses": _("Enter a whole number.")})
    if not 1 <= max_uses <= MAX_USES_LIMIT:
        raise ValidationError(
            {"max_uses": _("Allow between 1 and %(limit)d uses.") % {"limit": MAX_USES_LIMIT}}
        )


@action
def create_enrolment_token(
    *,
    actor: Any,
    zone: Zone,
    name: str,
    max_uses: int = 1,
    expires_at: datetime.datetime | None = None,
) -> tuple[EnrolmentToken, str]:
    """Create a token for ``zone``; the full token is returned once and never stored."""
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(zone, actor)
    zone = Zone.objects.select_related("customer").get(pk=zone.pk)
    if expires_at is None:
        expires_at = timezone.now() + DEFAULT_LIFETIME
    _check_lifetime(expires_at)
    _check_max_uses(max_uses)
    prefix, secret, full = generate_token()
    token = EnrolmentToken(
        customer=zone.customer,
        customer_path=zone.customer_path,
        zone=zone,
        name=name,
        prefix=prefix,
        secret_hash=_hash_secret(secret),
        max_uses=max_uses,
        expires_at=expires_at,
        created_by_id=getattr(actor, "pk", None),
    )
    token.full_clean(
        exclude=["customer_path", "prefix", "secret_hash"],
        validate_unique=False,
        validate_constraints=False,
    )
    token.save()
    auditing.record(
        "enrolment_token.create",
        obj=token,
        after={**auditing.snapshot(token), "prefix": prefix},
    )
    recheck_in_scope(token, actor)
    return token, full


@action
def revoke_enrolment_token(*, actor: Any, token: EnrolmentToken) -> EnrolmentToken:
    """Revoke a token at once; nodes it already registered stay. Revoking twice is a no-op."""
    require_permission(actor, perms.SERVERS_MANAGE)
    require_in_scope(token, actor)
    token = EnrolmentToken.objects.select_for_update().get(pk=token.pk)
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        auditing.record(
            "enrolment_token.revoke",
            obj=token,
            after={"revoked_at": token.revoked_at, "prefix": token.prefix},
        )
    return token


# --------------------------------------------------------------------------- facts

MAX_ADDRESSES = 64
MAX_HOST_KEYS = 8
MAX_DISKS = 64
MAX_CPUS = 4096
MAX_MEMORY_MB = 64 * 1024 * 1024  # 64 TiB
MAX_DISK_KB = 2**53  # 8 EiB: beyond any real volume, and exact as a JSON number
MAX_KEY_LENGTH = 16 * 1024
# Host key types the controller's SSH client can pin (ssh-dss is long gone from OpenSSH).
HOST_KEY_TYPES = {
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
}
# Used with fullmatch: "$" alone would let a trailing newline through.
_LABEL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_OS_TOKEN_RE = re.compile(r"^[A-Za-z0-9._-]{0,32}$")
_FSTYPE_RE = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
FACT_FIELDS = {
    "hostname",
    "addresses",
    "ssh_address",
    "ssh_port",
    "host_keys",
    "os_id",
    "os_version",
    "os_pretty_name",
    "cpus",
    "memory_mb",
    "disks",
}
REQUIRED_FACTS = {"hostname", "ssh_address", "host_keys"}
DISK_FIELDS = {"device", "fstype", "mount", "size_kb", "used_kb", "avail_kb"}


@dataclass
class NodeFacts:
    """What a node reported about itself, after validation."""

    hostname: str
    ssh_address: str
    host_keys: list[str]
    ssh_port: int = 22
    addresses: list[str] = field(default_factory=list)
    os_id: str = ""
    os_version: str = ""
    os_pretty_name: str = ""
    cpus: int = 0
    memory_mb: int = 0
    disks: list[dict[str, Any]] = field(default_factory=list)


class _Errors:
    """Collects per-field messages so one response lists every problem at once."""

    def __init__(self) -> None:
        self.by_field: dict[str, list[str]] = {}

    def add(self, name: str, message: str) -> None:
        self.by_field.setdefault(name, []).append(message)

    def raise_if_any(self) -> None:
        if self.by_field:
            raise ValidationError(self.by_field)


def _has_control_chars(value: str) -> bool:
    return any(unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Co", "Cn"} for ch in value)


def _is_int(value: Any) -> bool:
    # JSON true/false arrive as bool, a subclass of int: not a count.
    return isinstance(value, int) and not isinstance(value, bool)


def _clean_int(errors: _Errors, name: str, value: Any, low: int, high: int) -> int:
    if not _is_int(value):
        errors.add(name, _("Expected a whole number."))
        return low
    if not low <= value <= high:
        errors.add(name, _("Must be between %(low)d and %(high)d.") % {"low": low, "high": high})
        return low
    return value


def _clean_ip(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 45:
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    return str(address)


def _clean_hostname(errors: _Errors, value: Any) -> str:
    if not isinstance(value, str):
        errors.add("hostname", _("Expected a string."))
        return ""
    name = value[:-1] if value.endswith(".") else value
    labels = name.split(".")
    if not 1 <= len(name) <= 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        errors.add(
            "hostname",
            _(
                "Not a valid host name (RFC 1123: labels of letters, digits and hyphens, "
                "at most 63 characters each, 253 in all)."
            ),
        )
        return ""
    return name.lower()


def _clean_host_keys(errors: _Errors, value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        errors.add("host_keys", _("Expected a non-empty list of SSH public host keys."))
        return []
    if len(value) > MAX_HOST_KEYS:
        errors.add("host_keys", _("At most %(n)d host keys.") % {"n": MAX_HOST_KEYS})
        return []
    keys: list[str] = []
    for line in value:
        if not isinstance(line, str) or len(line) > MAX_KEY_LENGTH or _has_control_chars(line):
            errors.add("host_keys", _("Each host key must be one line of text."))
            continue
        try:
            normalized = normalize_public_key(line)
            key_type = normalized.split(" ", 1)[0]
            if key_type not in HOST_KEY_TYPES:
                raise InvalidKeyError(f"unsupported key type {key_type}")
            # Parsing the key itself catches data that is well-formed but not a key.
            load_public_key(normalized)
        except InvalidKeyError as exc:
            errors.add("host_keys", _("Not an OpenSSH public key: %(error)s") % {"error": exc})
            continue
        if normalized not in keys:
            keys.append(normalized)
    return keys


def _clean_disks(errors: _Errors, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        errors.add("disks", _("Expected a list."))
        return []
    if len(value) > MAX_DISKS:
        errors.add("disks", _("At most %(n)d disks.") % {"n": MAX_DISKS})
        return []
    disks: list[dict[str, Any]] = []
    for item in value:
        if not isinstance(item, dict):
            errors.add("disks", _("Each disk must be an object."))
            continue
        unknown = set(item) - DISK_FIELDS
        if unknown:
            errors.add(
                "disks", _("Unknown disk fields: %(f)s.") % {"f": ", ".join(sorted(unknown))}
            )
            continue
        mount, device, fstype = item.get("mount"), item.get("device", ""), item.get("fstype", "")
        if (
            not isinstance(mount, str)
            or not mount.startswith("/")
            or len(mount) > 255
            or _has_control_chars(mount)
        ):
            errors.add("disks", _("Each disk needs an absolute mount point."))
            continue
        if not isinstance(device, str) or len(device) > 255 or _has_control_chars(device):
            errors.add("disks", _("A disk's device must be a short line of text."))
            continue
        if fstype and (not isinstance(fstype, str) or not _FSTYPE_RE.fullmatch(fstype)):
            errors.add("disks", _("A disk's file system type is not valid."))
            continue
        sizes = {}
        for key in ("size_kb", "used_kb", "avail_kb"):
            number = item.get(key, 0)
            if not _is_int(number) or not 0 <= number <= MAX_DISK_KB:
                errors.add("disks", _("Disk sizes must be whole numbers of KiB."))
                break
            sizes[key] = number
        else:
            disks.append({"mount": mount, "device": device, "fstype": fstype or "", **sizes})
    return disks


def clean_facts(facts: Any) -> NodeFacts:
    """Validate what a node reported; raise ``ValidationError`` with messages per field."""
    errors = _Errors()
    if not isinstance(facts, dict):
        raise ValidationError({"non_field_errors": [_("Expected a JSON object.")]})
    for name in sorted(set(facts) - FACT_FIELDS):
        errors.add(name, _("Unknown field."))
    for name in sorted(REQUIRED_FACTS - set(facts)):
        errors.add(name, _("This field is required."))
    errors.raise_if_any()

    hostname = _clean_hostname(errors, facts["hostname"])
    ssh_address = _clean_ip(facts["ssh_address"])
    if ssh_address is None:
        errors.add("ssh_address", _("Expected an IPv4 or IPv6 address."))
    else:
        parsed = ipaddress.ip_address(ssh_address)
        if parsed.is_unspecified or parsed.is_multicast:
            errors.add("ssh_address", _("This address cannot be used to reach the node."))
    host_keys = _clean_host_keys(errors, facts["host_keys"])
    ssh_port = _clean_int(errors, "ssh_port", facts.get("ssh_port", 22), 1, 65535)

    addresses: list[str] = []
    raw_addresses = facts.get("addresses", [])
    if not isinstance(raw_addresses, list):
        errors.add("addresses", _("Expected a list of IP addresses."))
    elif len(raw_addresses) > MAX_ADDRESSES:
        errors.add("addresses", _("At most %(n)d addresses.") % {"n": MAX_ADDRESSES})
    else:
        for raw in raw_addresses:
            address = _clean_ip(raw)
            if address is None:
                errors.add("addresses", _("Not an IP address: %(v)r") % {"v": str(raw)[:50]})
            elif address not in addresses:
                addresses.append(address)

    os_fields: dict[str, str] = {}
    for name in ("os_id", "os_version"):
        value = facts.get(name, "")
        if not isinstance(value, str) or not _OS_TOKEN_RE.fullmatch(value):
            errors.add(name, _("Use at most 32 letters, digits, dots, hyphens or underscores."))
            value = ""
        os_fields[name] = value
    pretty = facts.get("os_pretty_name", "")
    if not isinstance(pretty, str) or len(pretty) > 200 or _has_control_chars(pretty):
        errors.add("os_pretty_name", _("Expected one line of at most 200 characters."))
        pretty = ""

    cpus = _clean_int(errors, "cpus", facts.get("cpus", 0), 0, MAX_CPUS)
    memory_mb = _clean_int(errors, "memory_mb", facts.get("memory_mb", 0), 0, MAX_MEMORY_MB)
    disks = _clean_disks(errors, facts.get("disks", []))
    errors.raise_if_any()
    if ssh_address is not None and ssh_address not in addresses:
        addresses.insert(0, ssh_address)
    return NodeFacts(
        hostname=hostname,
        ssh_address=ssh_address or "",
        host_keys=host_keys,
        ssh_port=ssh_port,
        addresses=addresses,
        os_id=os_fields["os_id"].lower(),
        os_version=os_fields["os_version"],
        os_pretty_name=pretty,
        cpus=cpus,
        memory_mb=memory_mb,
        disks=disks,
    )


# --------------------------------------------------------------------------- registration


class EnrolmentRefused(Exception):
    """A registration the token does not allow. ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, *, reason: str, status: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.status = status


def _nodes_with_any_key(keys: list[str]) -> QuerySet[Node]:
    """Nodes (not decommissioned) that reported or pinned any of ``keys``."""
    query = Q()
    for key in keys:
        # jsonb containment: exact element match.
        query |= Q(reported_host_keys__contains=[key]) | Q(pinned_host_keys__contains=[key])
    return Node.objects.filter(query).exclude(status=NodeStatus.DECOMMISSIONED)


def _same_machine(node: Node, keys: list[str]) -> bool:
    known = set(node.reported_host_keys or []) | set(node.pinned_host_keys or [])
    return bool(known & set(keys))


def _refuse(token: EnrolmentToken | None, reason: str, message: str, status: int = 403) -> NoReturn:
    """Audit a refusal of a real token (not of unknown prefixes), then raise."""
    if token is not None:
        with transaction.atomic():
            auditing.record(
                "node.register_refused",
                obj=token,
                actor=None,
                extra={"token": token.prefix, "reason": reason},
            )
    raise EnrolmentRefused(message, reason=reason, status=status)


def _token_refusal(token: EnrolmentToken, now: datetime.datetime) -> tuple[str, str] | None:
    state = token_state(token, now)
    if state == "revoked":
        return state, _("This enrolment token has been revoked. Ask for a new one.")
    if state == "expired":
        return state, _("This enrolment token expired at %(when)s UTC. Ask for a new one.") % {
            "when": token.expires_at.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M")
        }
    if state == "spent":
        return state, _(
            "This enrolment token has been used up (%(n)d of %(n)d uses). Ask for a new one."
        ) % {"n": token.max_uses}
    return None


NODE_FACT_ATTRS = (
    "hostname",
    "addresses",
    "ssh_address",
    "ssh_port",
    "os_id",
    "os_version",
    "os_pretty_name",
    "cpus",
    "memory_mb",
    "disks",
)


def register_node(*, token_string: Any, facts: Any) -> tuple[Node, bool]:
    """Register (or re-register) the node described by ``facts`` with an enrolment token.

    Returns ``(node, created)``. A node that registered before (same host key, same zone)
    is updated while still pending and never costs another use, so re-running the script
    is harmless. Raises ``ValidationError`` for malformed input and
    :class:`EnrolmentRefused` for a token that does not allow this registration; in both
    cases nothing is created. Audited as the system (no administrator acts here).
    """
    parts = split_token(token_string)
    if parts is None:
        raise ValidationError({"token": _("This is not an enrolment token (umsnode_…).")})
    cleaned = clean_facts(facts)
    prefix, secret = parts
    invalid = _("This enrolment token is not valid. Check that it was copied completely.")

    token = EnrolmentToken.objects.filter(prefix=prefix).first()
    if token is None:
        _refuse(None, "unknown", invalid)
    if not hmac.compare_digest(_hash_secret(secret), token.secret_hash):
        # Same answer as an unknown token: the caller learns nothing about the prefix.
        _refuse(token, "forged", invalid)
    now = timezone.now()
    if token.revoked_at is not None or token.expires_at <= now:
        _refuse(token, *_token_refusal(token, now))

    outcome: tuple[Node, bool] | None = None
    refusal: tuple[str, str, int] | None = None
    with transaction.atomic():
        # One registration per zone at a time: two runs of the script on the same node
        # cannot both miss each other and create two nodes.
        zone = (
            Zone.objects.select_for_update(of=("self",))
            .select_related("customer")
            .get(pk=token.zone_id)
        )
        matches = [
            n for n in _nodes_with_any_key(cleaned.host_keys) if _same_machine(n, cleaned.host_keys)
        ]
        elsewhere = [n for n in matches if n.zone_id != zone.pk]
        here = [n for n in matches if n.zone_id == zone.pk]
        if elsewhere:
            # Re-enrolling a known machine into another zone (or tenant) would hand it to
            # whoever holds that token; it must be decommissioned where it is first.
            refusal = (
                "conflict",
                _(
                    "A node with this host key is already enrolled in another zone. "
                    "Decommission it there before enrolling it again."
                ),
                409,
            )
        elif here:
            outcome = (_update_existing(here[0], cleaned, token, now), False)
        else:
            consumed = EnrolmentToken.objects.filter(
                pk=token.pk,
                uses__lt=F("max_uses"),
                revoked_at__isnull=True,
                expires_at__gt=now,
            ).update(uses=F("uses") + 1)
            if consumed:
                outcome = (_create_node(zone, cleaned, token, now), True)
            else:
                token.refresh_from_db()
                reason, message = _token_refusal(token, now) or ("spent", invalid)
                refusal = (reason, message, 403)
    if refusal is not None:
        _refuse(token, refusal[0], refusal[1], refusal[2])
    assert outcome is not None
    return outcome


def _create_node(zone: Zone, facts: NodeFacts, token: EnrolmentToken, now: Any) -> Node:
    node = Node(
        customer=zone.customer,
        customer_path=zone.customer_path,
        zone=zone,
        status=NodeStatus.PENDING,
        reported_host_keys=facts.host_keys,
        enrolled_with_id=token.pk,
        registered_at=now,
        last_seen_at=now,
        **{name: getattr(facts, name) for name in NODE_FACT_ATTRS},
    )
    node.save()
    auditing.record(
        "node.register",
        obj=node,
        actor=None,
        after={**auditing.snapshot(node), "reported_host_keys": facts.host_keys},
        extra={"token": token.prefix},
    )
    return node


def _update_existing(node: Node, facts: NodeFacts, token: EnrolmentToken, now: Any) -> Node:
    node = Node.objects.select_for_update().get(pk=node.pk)
    if node.status != NodeStatus.PENDING:
        # Approved nodes keep what the administrator approved (address, pinned keys);
        # the script run changes nothing, it is merely harmless.
        return node
    audited = [*NODE_FACT_ATTRS, "reported_host_keys"]
    before = auditing.snapshot(node, audited)
    for name in NODE_FACT_ATTRS:
        setattr(node, name, getattr(facts, name))
    node.reported_host_keys = facts.host_keys
    node.last_seen_at = now
    node.save()
    old, new = auditing.diff(before, auditing.snapshot(node, audited))
    auditing.record(
        "node.reregister",
        obj=node,
        actor=None,
        before=old,
        after=new,
        extra={"token": token.prefix},
    )
    return node
