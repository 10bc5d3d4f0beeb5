"""``{% tier_usage domain %}``: the domain page's "Storage tiers" table (bytes and
messages on the mail store and on its secondary tier, as the last tiering pass measured
them); nothing for a domain no pass has measured."""

from __future__ import annotations

from typing import Any

from django import template
from django.template.loader import render_to_string

from backup.models import TierUsage

register = template.Library()


@register.simple_tag(takes_context=True)
def tier_usage(context: dict[str, Any], domain: Any) -> str:
    row = TierUsage.objects.filter(domain=domain).first()
    if row is None:
        return ""
    return render_to_string("backup/_tier_usage.html", {"row": row}, request=context.get("request"))
