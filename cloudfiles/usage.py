"""Cloud files in the subtree resource limits (``cloud_gb``, counted in MB).

A subtree's cloud files usage is the sum of the cloud quotas of its mailboxes that have
the cloud files flag: what their Nextcloud accounts may hold (the quota Nextcloud
enforces), as mailbox quota is counted for mail. The flag is resolved like every
protocol (customer chain, domain, mailbox: the last level saying allow or deny wins, as
in :func:`mail.policy.resolve_protocols_from`), in five queries whatever the number of
mailboxes, once per domain for the mailboxes that say nothing themselves.

The limit is held where accounts are made: :func:`admitted` is applied when a cloud files
node's desired state is built, so mailboxes beyond a subtree's limit get no account (and
the converge report names them) rather than Nextcloud running over it.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Q

from deploy.services.nextcloud.data import Account
from mail import choices
from mail.models import CustomerPolicy, Domain, DomainPolicy, Mailbox
from tenants.limits import ResourceLimit

from . import policy
from .state import cloud_quota_mb

RESOURCE = "cloud_gb"
CODE = "files"  # the protocol access flag of cloud files (mail.choices.PROTOCOLS)


def _ancestors(path: str) -> list[str]:
    ids = [part for part in path.split("/") if part]
    return ["/" + "/".join(ids[: i + 1]) + "/" for i in range(len(ids))]


def cloud_mailboxes(paths: Iterable[str]) -> list[tuple[str, str, int]]:
    """(customer path, email, cloud quota MB) of every mailbox with cloud files under any
    of ``paths``."""
    wanted = sorted(set(paths))
    if not wanted:
        return []
    under = Q()
    for path in wanted:
        under |= Q(customer_path__startswith=path)
    rows = list(
        Mailbox.objects.filter(under).values_list(
            "customer_path", "email", "domain_id", "quota_mb", "protocol_access"
        )
    )
    if not rows:
        return []
    domains = dict(
        Domain.objects.filter(pk__in={r[2] for r in rows}).values_list("pk", "customer_path")
    )
    chain_paths = {a for p in domains.values() for a in _ancestors(p)}
    customer_access = dict(
        CustomerPolicy.objects.filter(customer_path__in=chain_paths).values_list(
            "customer_path", "protocol_access"
        )
    )
    domain_access = dict(
        DomainPolicy.objects.filter(domain_id__in=domains).values_list(
            "domain_id", "protocol_access"
        )
    )
    quotas = {
        p: fields["quota_mb"]["value"]
        for p, fields in policy.effective_many({r[0] for r in rows}).items()
    }
    inherited: dict[int, bool] = {}
    for domain_id, domain_path in domains.items():
        value = choices.PROTOCOL_DEFAULTS[CODE]
        for access in [*(customer_access.get(a) for a in _ancestors(domain_path)),
                       domain_access.get(domain_id)]:  # fmt: skip
            value = _setting(access, value)
        inherited[domain_id] = value
    return [
        (path, email, cloud_quota_mb(quota_mb, quotas[path]))
        for path, email, domain_id, quota_mb, access in rows
        if _setting(access, inherited[domain_id])
    ]


def _setting(access: dict | None, value: bool) -> bool:
    """A level's own word on cloud files, else what it inherits."""
    own = (access or {}).get(CODE)
    return own == choices.ALLOW if own in (choices.ALLOW, choices.DENY) else value


def usage_provider(paths: Iterable[str]) -> dict[str, dict[str, int]]:
    """{path: {"cloud_gb": MB}} for :func:`tenants.limits.register_usage_provider`."""
    wanted = list(dict.fromkeys(paths))
    totals = dict.fromkeys(wanted, 0)
    for path, _email, quota in cloud_mailboxes(wanted):
        for top in wanted:
            if path.startswith(top):
                totals[top] += quota
    return {path: {RESOURCE: total} for path, total in totals.items()}


def admitted(accounts: list[Account], paths: dict[str, str], scope: str) -> list[str]:
    """Turn off cloud files of the accounts that do not fit their subtrees' limits.

    ``paths`` maps each account's uid to its customer path; ``scope`` is the node's tree.
    Every limit with ``max_cloud_gb`` inside the tree or above it counts the accounts of
    its subtree in address order (stable: the same ones keep their account on every
    converge). Returns the uids left without an account, for the converge report.
    """
    limits = list(
        ResourceLimit.objects.filter(max_cloud_gb__isnull=False)
        .filter(Q(customer_path__startswith=scope) | Q(customer_path__in=_ancestors(scope)))
        .values_list("customer_path", "max_cloud_gb")
    )
    if not limits:
        return []
    refused: set[str] = set()
    for limit_path, cap_gb in sorted(limits):
        used = 0
        for account in sorted(accounts, key=lambda a: a.uid):
            if not account.files or account.uid in refused:
                continue
            if not paths.get(account.uid, "").startswith(limit_path):
                continue
            if used + account.quota_mb > cap_gb * 1024:
                refused.add(account.uid)
            else:
                used += account.quota_mb
    for index, account in enumerate(accounts):
        if account.uid in refused:
            accounts[index] = Account(
                uid=account.uid,
                display_name=account.display_name,
                group=account.group,
                quota_mb=account.quota_mb,
                files=False,
                enabled=account.enabled,
            )
    return sorted(refused)
