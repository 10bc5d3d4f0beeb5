"""Template helpers of the audit pages: translated action labels, the history link."""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import reverse

from audit import labels

register = template.Library()


@register.filter
def audit_label(action: str) -> str:
    """The translated label of an audit action code (the code itself when unknown)."""
    return labels.label(action or "")


@register.inclusion_tag("audit/_history_link.html", takes_context=True)
def history_link(context: template.Context, obj: Any, css_class: str = "btn") -> dict[str, Any]:
    """A "History" link to the audit records of ``obj``, for readers of the audit log."""
    request = context.get("request")
    user = getattr(request, "user", None)
    url = ""
    if (
        obj is not None
        and getattr(user, "is_authenticated", False)
        and user.has_permission("audit.view")
    ):
        url = reverse("audit:object-history", args=[obj._meta.label_lower, obj.pk])
    return {"url": url, "css_class": css_class}
