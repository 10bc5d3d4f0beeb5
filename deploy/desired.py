"""Build the :class:`~deploy.services.base.DesiredState` of one node from the database.

The number of queries is constant whatever the number of domains and mailboxes: each
table is read once with ``values_list`` (no model instances, no per-row queries), and the
inheritance of protocol access and filtering policy is folded in memory with
``mail.policy.resolve_protocols_from``, the same function the API uses to show
effective access, so the nodes and the portal can never disagree.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Q, Sum, TextField
from django.db.models.functions import Cast

from mail import choices as mail_choices
from mail.models import (
    Alias,
    AutoResponder,
    CustomerPolicy,
    Domain,
    DomainAlias,
    DomainPolicy,
    Mailbox,
    SieveScript,
)
from mail.policy import Source, resolve_protocols_from
from mail.signing import signing_keys
from servers.choices import NodeStatus
from servers.models import Node
from tenants.models import Customer

from . import dav_state, placement
from .services.base import AliasData, DesiredState, DomainData, MailboxData, NodeView
from .services.nginx.tasks import current_certificates

#: Nodes another node may route to or list as an upstream.
SERVING_STATUSES = (NodeStatus.APPROVED, NodeStatus.DEPLOYING, NodeStatus.ACTIVE)

#: Defaults of ``DesiredState.settings``; ``settings.UMS_CONVERGE`` overrides any of them.
DEFAULT_SETTINGS: dict[str, Any] = {
    # Lowest TLS version offered by Postfix, Courier and nginx ("TLSv1", "TLSv1.1" only
    # when the operator configures it: the product sheet's default is TLS 1.2).
    "tls_min_version": "TLSv1.2",
    # Where Maildirs live on IMAP nodes: <mail_root>/<domain>/<local part>/Maildir/.
    "mail_root": "/var/mail/vhosts",
    # Numeric owner of the mail store; no passwd entry is needed (Postfix virtual(8)
    # and Courier userdb both take numbers).
    "mail_uid": 5000,
    "mail_gid": 5000,
    # Postfix log file (empty: syslog). Test nodes have no syslog.
    "postfix_maillog_file": "",
    # SMTP nodes pass mail through the content filter (spam, viruses, attachments, sender
    # lists, greylisting; deploy/services/postfix/filtering.py). False: a plain relay.
    "content_filter": True,
    # Networks allowed to relay without authentication (besides loopback).
    "relay_networks": [],
}


#: Per-node settings from apps ``deploy`` may not import (backup's per mail store
#: settings): each ``f(node) -> {key: value}`` overrides ``UMS_NODE_SETTINGS`` for that
#: node and is validated with it by every converge. Registered in the app's ``ready()``.
NODE_OVERRIDES: list[Callable[[Node], Mapping[str, Any]]] = []

#: Builders of ``DesiredState.extra`` from apps ``deploy`` may not import (cloud files):
#: each ``f(node, state)`` adds what its service renders from. Registered in ``ready()``.
STATE_BUILDERS: list[Callable[[Node, DesiredState], None]] = []

#: Called as ``f(node, state)`` after a real converge of ``node`` to ``state`` succeeded
#: (deploy.jobs): apps record what the node now has (cloud files: which mailboxes have an
#: enabled Nextcloud account, for the usage figures). Registered in ``ready()``.
CONVERGED_HOOKS: list[Callable[[Node, DesiredState], None]] = []


def os_family(os_id: str) -> str:
    """ "debian" or "rhel" from /etc/os-release's ID (RockyLinux is the production OS)."""
    return "debian" if (os_id or "").lower() in ("debian", "ubuntu", "raspbian") else "rhel"


def node_view(node: Node) -> NodeView:
    return NodeView(
        id=node.pk,
        hostname=node.hostname,
        address=mail_address(node.addresses, node.ssh_address),
        roles=tuple(node.roles or ()),
        os_family=os_family(node.os_id),
        zone_id=node.zone_id,
    )


def mail_address(addresses: list[str] | None, ssh_address: str) -> str:
    """The address mail and upstream traffic use: the first listed, else the SSH one."""
    return (addresses or [ssh_address])[0]


def _related_nodes(node: Node) -> dict[str, list[tuple[str, str]]]:
    """Nodes by role in the same customer tree as ``node`` (one query)."""
    ancestors = _ancestor_paths(node.customer_path)
    rows = (
        Node.objects.filter(status__in=SERVING_STATUSES)
        .filter(Q(customer_path__startswith=node.customer_path) | Q(customer_path__in=ancestors))
        .order_by("pk")
        .values_list("pk", "hostname", "addresses", "ssh_address", "roles")
    )
    by_role: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for pk, hostname, addresses, ssh_address, roles in rows:
        if pk == node.pk and node.status not in SERVING_STATUSES:
            continue
        for role in roles or ():
            by_role[role].append((hostname, mail_address(addresses, ssh_address)))
    # The node itself always knows its own roles, even before it is active.
    for role in node.roles or ():
        entry = (node.hostname, mail_address(node.addresses, node.ssh_address))
        if entry not in by_role[role]:
            by_role[role].insert(0, entry)
    return dict(by_role)


def _ancestor_paths(path: str) -> list[str]:
    ids = [part for part in path.split("/") if part]
    return ["/" + "/".join(ids[: i + 1]) + "/" for i in range(len(ids))]


def _plain(value: Any) -> Any:
    """JSON-friendly policy values (scores are Decimals in the database)."""
    if isinstance(value, Decimal):
        return float(value)
    return value


def settings_for(node: Node) -> dict[str, Any]:
    """``DesiredState.settings`` of ``node`` (defaults, UMS_NODE_SETTINGS, per-node ones)."""
    conf = {**DEFAULT_SETTINGS, **getattr(settings, "UMS_CONVERGE", {})}
    for overrides in NODE_OVERRIDES:
        conf.update(overrides(node))
    if conf.get("srs_domain") and not conf.get("srs_secret"):
        # The same on every SMTP node (a bounce may return through any), never stored.
        conf["srs_secret"] = hmac.new(
            settings.SECRET_KEY.encode(), b"ums-srs-secret", hashlib.sha256
        ).hexdigest()
    return conf


def build(node: Node, *, mailbox_ids: Collection[int] | None = None) -> DesiredState:
    """The desired state of ``node``: the domains of the customer tree the node serves.

    An SMTP node serves every domain of its tree (it is their MX) and knows which IMAP
    node each is placed on (``DomainData.node_id``/``node_address``, see
    :mod:`deploy.placement`); an IMAP-only node serves just the domains placed on it.
    Domains not placed yet are placed here, so a domain is placed at the latest on the
    first converge after it was created.

    With ``mailbox_ids`` the state holds only those mailboxes and their domains (no
    aliases): what :mod:`deploy.express` renders a new mailbox's own map entries from.
    """
    conf = settings_for(node)
    if "loadbalancer" in (node.roles or ()) and "tls_certificates" not in conf:
        # The controller's certificate store, as renewed by the scheduled task.
        conf["tls_certificates"] = current_certificates()
    state = DesiredState(node=node_view(node), nodes_by_role=_related_nodes(node), settings=conf)
    if "webmail" in (node.roles or ()) and mailbox_ids is None:
        from . import webmail

        state.webmail = webmail.build(())  # a webmail node with no domain yet
    _build_mail(node, state, mailbox_ids)
    if mailbox_ids is None:
        for builder in STATE_BUILDERS:
            builder(node, state)
    return state


def _build_mail(node: Node, state: DesiredState, mailbox_ids: Collection[int] | None) -> None:
    """The mail part of :func:`build`: domains, mailboxes, aliases into ``state``."""
    scope = node.customer_path

    domain_rows = Domain.objects.filter(customer_path__startswith=scope)
    if mailbox_ids is not None:
        domain_rows = domain_rows.filter(mailboxes__pk__in=list(mailbox_ids)).distinct()
    domains = list(
        domain_rows.order_by("name").values_list(
            "pk", "name", "is_enabled", "catch_all", "customer_id", "customer_path"
        )
    )
    if not domains:
        return
    placed = placement.place_domains([row[0] for row in domains], actor=None)
    roles = set(node.roles or ())
    if "imap" in roles and "smtp" not in roles:
        domains = [row for row in domains if getattr(placed.get(row[0]), "node_id", 0) == node.pk]
        if not domains:
            return
    domain_ids = [row[0] for row in domains]
    # The mail store's allocation per domain: the sum of its mailboxes' quotas (disabled
    # ones too, their mail is still on disk). The domain model has no limit of its own;
    # Courier enforces each mailbox's share, the dataset quota bounds the whole domain.
    quotas: dict[int, int] = dict(
        Mailbox.objects.filter(domain_id__in=domain_ids)
        .values("domain_id")
        .annotate(total=Sum("quota_mb"))
        .values_list("domain_id", "total")
    )

    # Customers above and inside the scope with their policies: the inheritance chain.
    paths: set[str] = set()
    for row in domains:
        paths.update(_ancestor_paths(row[5]))
    customers = dict(Customer.objects.filter(path__in=paths).values_list("path", "pk"))
    names = dict(Customer.objects.filter(path__in=paths).values_list("pk", "name"))
    cpolicies = {p.customer_id: p for p in CustomerPolicy.objects.filter(customer_id__in=names)}
    dpolicies = {p.domain_id: p for p in DomainPolicy.objects.filter(domain_id__in=domain_ids)}

    alias_domains: dict[int, list[str]] = defaultdict(list)
    for domain_id, name in (
        DomainAlias.objects.filter(domain_id__in=domain_ids, is_enabled=True)
        .order_by("name")
        .values_list("domain_id", "name")
    ):
        alias_domains[domain_id].append(name)

    dkim = signing_keys(domain_ids)

    # Per domain: the protocol levels above the mailbox, and the effective filtering.
    domain_levels: dict[int, list[tuple[Source, dict | None]]] = {}
    domain_names: dict[int, str] = {}
    for row in domains:
        pk, name, enabled, catch_all, _customer_id, customer_path = row
        domain_names[pk] = name
        levels: list[tuple[Source, dict | None]] = []
        policy_objects: list[Any] = []
        for path in _ancestor_paths(customer_path):
            cust_id = customers.get(path)
            if cust_id is None:
                continue
            policy = cpolicies.get(cust_id)
            source = Source(mail_choices.SOURCE_CUSTOMER, cust_id, names.get(cust_id, ""))
            levels.append((source, policy.protocol_access if policy else None))
            policy_objects.append(policy)
        dpolicy = dpolicies.get(pk)
        levels.append(
            (
                Source(mail_choices.SOURCE_DOMAIN, pk, name),
                dpolicy.protocol_access if dpolicy else None,
            )
        )
        policy_objects.append(dpolicy)
        domain_levels[pk] = levels
        filtering: dict[str, Any] = {}
        for field in mail_choices.FILTER_FIELDS:
            value: Any = mail_choices.FILTER_DEFAULTS[field]
            for policy in policy_objects:
                own = getattr(policy, field, None) if policy is not None else None
                if own is not None:
                    value = own
            filtering[field] = _plain(value)
        selector, key = dkim.get(pk, (None, None))
        holder = placed.get(pk)
        state.domains.append(
            DomainData(
                name=name,
                enabled=enabled,
                catch_all=catch_all or "",
                aliases=tuple(alias_domains.get(pk, ())),
                quota_mb=quotas.get(pk) or None,
                policy=filtering,
                dkim_selector=selector,
                dkim_private_key=key,
                node_id=holder.node_id if holder else None,
                node_address=holder.address if holder else None,
            )
        )

    if state.webmail is not None:
        from . import webmail

        state.webmail = webmail.build((r[0], r[1], r[4], r[5]) for r in domains)

    # One active script per mailbox (a database constraint). Scripts are never joined:
    # each has its own "require" header, which must come first.
    sieve: dict[int, str] = {}
    for mailbox_id, script in (
        SieveScript.objects.filter(mailbox__domain_id__in=domain_ids, is_active=True)
        .order_by("mailbox_id", "-pk")
        .values_list("mailbox_id", "script")
    ):
        sieve.setdefault(mailbox_id, script)
    responders: dict[int, dict] = {}
    for mailbox_id, subject, body, start, end, interval in AutoResponder.objects.filter(
        mailbox__domain_id__in=domain_ids, is_enabled=True
    ).values_list("mailbox_id", "subject", "body", "start_date", "end_date", "interval_days"):
        responders[mailbox_id] = {
            "subject": subject,
            "body": body,
            "start_date": start.isoformat() if start else None,
            "end_date": end.isoformat() if end else None,
            "interval_days": interval,
        }

    # The big one: a server-side cursor keeps memory flat at 100k+ mailboxes. The two
    # JSON columns come as text: nearly every row holds "[]" and "{}", and Django's JSON
    # converter (json.loads twice per row) was a third of the build at 100k mailboxes.
    mailbox_filter = Mailbox.objects.filter(domain_id__in=domain_ids)
    if mailbox_ids is not None:
        mailbox_filter = mailbox_filter.filter(pk__in=list(mailbox_ids))
    mailbox_rows = (
        mailbox_filter.order_by("email")
        .annotate(
            forward_text=Cast("forward_to", TextField()),
            access_text=Cast("protocol_access", TextField()),
        )
        .values_list(
            "pk",
            "domain_id",
            "local_part",
            "email",
            "password_hash",
            "quota_mb",
            "is_enabled",
            "read_only",
            "can_delete",
            "can_send",
            "retention_days",
            "forward_text",
            "forward_keep_copy",
            "access_text",
        )
        .iterator(chunk_size=5000)
    )
    # Most mailboxes inherit everything: resolve once per (domain, own settings), and
    # share the resulting dict (renderers derive per-mailbox fields once per dict).
    resolved: dict[tuple[int, str | None], dict[str, bool]] = {}
    append = state.mailboxes.append
    no_forward: tuple[str, ...] = ()
    for (
        pk,
        domain_id,
        local_part,
        email,
        password_hash,
        quota_mb,
        enabled,
        read_only,
        can_delete,
        can_send,
        retention_days,
        forward_text,
        keep_copy,
        access_text,
    ) in mailbox_rows:
        cache_key = (domain_id, access_text)
        protocols = resolved.get(cache_key)
        if protocols is None:
            access = json.loads(access_text) if access_text else None
            own = {k: v for k, v in (access or {}).items() if v in ("allow", "deny")}
            levels = [
                *domain_levels[domain_id],
                (Source(mail_choices.SOURCE_MAILBOX, None, ""), own),
            ]
            protocols = {
                code: bool(info["allowed"]) for code, info in resolve_protocols_from(levels).items()
            }
            resolved[cache_key] = protocols
        if forward_text is None or forward_text == "[]":
            forward = no_forward
        else:
            forward = tuple(json.loads(forward_text) or ())
        append(
            MailboxData(
                email,
                local_part,
                domain_names[domain_id],
                password_hash,
                quota_mb,
                enabled,
                read_only,
                can_delete,
                can_send,
                retention_days or 0,
                forward,
                keep_copy,
                protocols,
                sieve.get(pk),
                responders.get(pk),
            )
        )

    if mailbox_ids is not None:
        return
    if "cloudfiles" in roles:
        state.dav_groups = dav_state.groups(scope, state.mailboxes)
    for email, targets, enabled in (
        Alias.objects.filter(domain_id__in=domain_ids)
        .order_by("email")
        .values_list("email", "targets", "is_enabled")
    ):
        state.aliases.append(AliasData(email=email, targets=tuple(targets or ()), enabled=enabled))
    return
