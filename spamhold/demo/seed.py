"""Create the demo, or whatever of it is missing; never change what exists.

A second run adds nothing and changes nothing: objects are looked up by their natural
keys before anything is created, settings are applied once (:mod:`.marks`), measured
used space is never overwritten and existing administrators keep their passwords.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction

from ums import context

from . import csv_demo, jobrun, mailboxes, policies, tree
from .tree import Login


@dataclass
class SeedResult:
    created_logins: list[Login] = field(default_factory=list)
    csv_job_id: int | None = None
    csv_job_status: str = ""


def seed() -> SeedResult:
    """Seed the demo as the CLI; one transaction, so a failure leaves nothing half-made."""
    result = SeedResult()
    with context.acting(channel=context.CHANNEL_CLI), transaction.atomic():
        people = tree.seed_people()
        mailboxes.seed_mail(people)
        policies.seed_policies(people)
        result.created_logins = people.created
        result.csv_job_id = csv_demo.request_import(people)
    if result.csv_job_id is not None:
        result.csv_job_status = jobrun.finish(result.csv_job_id)
    return result
