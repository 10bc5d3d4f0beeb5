"""``{% replication_summary domain %}``: the domain head's line about its primary and
replicas (with the worst lag), linking to the replication page."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils import timezone

from .. import views_data

register = template.Library()


@register.inclusion_tag("replication/_summary.html")
def replication_summary(domain: Any) -> dict[str, Any]:
    row = views_data.domain_row(domain, timezone.now())
    return {"row": row, "domain": domain}


@register.filter
def lag_minutes(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds / 60:.1f}"
