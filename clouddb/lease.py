"""A cluster's lease: one reconciler pass or failover works on a zone's cloud database
at a time. Claimed with a conditional UPDATE (no lock held across node work), renewed
while the holder works, expired when it died; the token fences a holder that was
taken for dead."""

from __future__ import annotations

import datetime

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from .models import CloudDbCluster


def seconds() -> int:
    return int(getattr(settings, "UMS_CLOUDDB_LEASE_SECONDS", 120))


def claim(cluster_id: int) -> int | None:
    """The new token, or None while another holder's lease runs."""
    now = timezone.now()
    until = now + datetime.timedelta(seconds=seconds())
    got = CloudDbCluster.objects.filter(
        Q(lease_until__isnull=True) | Q(lease_until__lt=now), pk=cluster_id
    ).update(lease_until=until, lease_token=F("lease_token") + 1)
    if not got:
        return None
    return CloudDbCluster.objects.values_list("lease_token", flat=True).get(pk=cluster_id)


def renew(cluster_id: int, token: int) -> bool:
    """Extend the holder's lease; False once it was released or taken over. A released
    lease keeps its token, so without ``lease_until`` set a late renew (a progress callback
    after the release) would take it back for nobody (the converge lease had that bug)."""
    until = timezone.now() + datetime.timedelta(seconds=seconds())
    return bool(
        CloudDbCluster.objects.filter(
            pk=cluster_id, lease_token=token, lease_until__isnull=False
        ).update(lease_until=until)
    )


def release(cluster_id: int, token: int) -> None:
    CloudDbCluster.objects.filter(pk=cluster_id, lease_token=token).update(lease_until=None)
