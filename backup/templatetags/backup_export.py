"""``{% export_link obj %}``: the "Export Maildir" button of a mailbox or domain page,
shown only to administrators holding the content permission."""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext as _

from backup.export import CONTENT_PERMISSION

register = template.Library()


@register.simple_tag(takes_context=True)
def export_link(context: dict[str, Any], obj: Any) -> str:
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.has_permission(CONTENT_PERMISSION):
        return ""
    key = "mailbox" if obj._meta.model_name == "mailbox" else "domain"
    return format_html(
        '<a class="btn" href="{}?{}={}">{}</a>',
        reverse("backup:export-create"),
        key,
        obj.pk,
        _("Export Maildir"),
    )
