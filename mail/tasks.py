"""Periodic work of the mail app (Celery beat)."""

from __future__ import annotations

import datetime

from celery import shared_task
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from . import actions, choices
from .models import DkimKey, Domain

#: A pending rotation's DNS record is looked up again at most this often.
RECHECK_AFTER = datetime.timedelta(hours=1)


@shared_task(name="mail.recheck_dkim_rotations")
def recheck_dkim_rotations() -> int:
    """Queue a DNS check for each domain whose rotated-in key is not yet seen in DNS, so
    signing moves to it once the owner published it, without anyone pressing "Check
    DNS". Returns how many checks were queued."""
    cutoff = timezone.now() - RECHECK_AFTER
    retired = DkimKey.objects.filter(domain=OuterRef("domain"), state=choices.DKIM_RETIRED)
    waiting = (
        DkimKey.objects.filter(state=choices.DKIM_ACTIVE)
        .exclude(dns_status=choices.DNS_MATCH)
        .filter(Q(dns_checked_at__isnull=True) | Q(dns_checked_at__lt=cutoff))
        .filter(Exists(retired))
        .values_list("domain_id", flat=True)
    )
    queued = 0
    for domain in Domain.objects.filter(pk__in=list(waiting)):
        with transaction.atomic():
            actions.check_dkim_dns(actor=None, domain=domain)
        queued += 1
    return queued
