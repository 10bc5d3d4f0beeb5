"""The demo's mail: domains (one internationalised), an alias domain, a DKIM key,
mailboxes with quotas and used space, aliases and distribution groups, an auto-responder
and a Sieve filter. Each object is created only when absent.
"""

from __future__ import annotations

import secrets

from mail import actions, choices, validators
from mail.models import Alias, AutoResponder, DkimKey, Domain, DomainAlias, Mailbox, SieveScript

from .catalogue import (
    AUTORESPONDER,
    DOMAINS,
    SIEVE_MAILBOX,
    SIEVE_NAME,
    SIEVE_RULES,
    DemoDomain,
)
from .tree import People


def ascii_name(name: str) -> str:
    return validators.normalise_domain(name)[0]


def mailbox_password(local_part: str = "") -> str:
    """A random 24-character passphrase (the mailbox rule accepts 16+ as a passphrase).

    Never printed: the demo's mailboxes are there to be looked at, and an administrator
    who wants to log in to one sets its password in the portal (audited). Drawn again in
    the rare case it contains the mailbox name ("ops" in 24 random characters), which the
    password rules refuse."""
    while True:
        password = secrets.token_urlsafe(18)
        if not local_part or local_part.lower() not in password.lower():
            return password


def seed_mail(people: People) -> dict[str, Domain]:
    """Create what is missing of every demo domain; the demo domains by catalogue name."""
    domains = {}
    for spec in DOMAINS:
        actor = people.actor(spec.admin)
        domain = _domain(spec, people, actor)
        domains[spec.name] = domain
        for alias_name in spec.domain_aliases:
            if not DomainAlias.objects.filter(name=ascii_name(alias_name)).exists():
                actions.create_domain_alias(actor=actor, domain=domain, name=alias_name)
        if spec.dkim and not DkimKey.objects.filter(domain=domain).exists():
            actions.generate_dkim_key(actor=actor, domain=domain)
        _mailboxes(spec, domain, actor)
        _aliases(spec, domain, actor)
    _extras(people)
    return domains


def _domain(spec: DemoDomain, people: People, actor: object) -> Domain:
    domain = Domain.objects.filter(name=ascii_name(spec.name)).first()
    if domain is None:
        domain = actions.create_domain(
            actor=actor,
            customer=people.customers[spec.customer],
            name=spec.name,
            contact_email=f"{spec.admin}@demo.invalid",
            description=spec.description,
        )
    return domain


def _mailboxes(spec: DemoDomain, domain: Domain, actor: object) -> None:
    measured: dict[int, int] = {}
    for box in spec.mailboxes:
        mailbox = Mailbox.objects.filter(domain=domain, local_part=box.local_part).first()
        if mailbox is None:
            mailbox = actions.create_mailbox(
                actor=actor,
                domain=domain,
                local_part=box.local_part,
                password=mailbox_password(box.local_part),
                display_name=box.display_name,
                quota_mb=box.quota_mb,
                **box.fields,
            )
        # Only a figure no node has reported yet: real measurements are never overwritten.
        if mailbox.used_updated_at is None:
            measured[mailbox.pk] = mailbox.quota_mb * 1024 * 1024 * box.used_percent // 100
    if measured:
        actions.record_used_space(measured)


def _aliases(spec: DemoDomain, domain: Domain, actor: object) -> None:
    for alias in spec.aliases:
        if Alias.objects.filter(domain=domain, local_part=alias.local_part).exists():
            continue
        targets = [t if "@" in t else f"{t}@{domain.name}" for t in alias.targets]
        actions.create_alias(
            actor=actor,
            domain=domain,
            local_part=alias.local_part,
            targets=targets,
            name=alias.name,
            kind=choices.GROUP if alias.group else choices.ALIAS,
        )


def _extras(people: People) -> None:
    """The auto-responder and the Sieve filter (on the government's mailboxes)."""
    actor = people.actor("gov.it")
    address, subject, body = AUTORESPONDER
    mailbox = Mailbox.objects.filter(email=address).first()
    if mailbox is not None and not AutoResponder.objects.filter(pk=mailbox.pk).exists():
        actions.set_autoresponder(
            actor=actor,
            mailbox=mailbox,
            is_enabled=True,
            subject=subject,
            body=body,
            interval_days=7,
        )
    mailbox = Mailbox.objects.filter(email=SIEVE_MAILBOX).first()
    if mailbox is not None and not SieveScript.objects.filter(mailbox=mailbox).exists():
        actions.create_sieve_script(
            actor=actor, mailbox=mailbox, name=SIEVE_NAME, rules=SIEVE_RULES
        )
