"""Template context shared by every portal page: the navigation and the languages."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from ums.portal import notices

# (url name or None while the section is not built yet, label, icon, permission to see it)
NAVIGATION = [
    ("portal:home", _("Home"), "home", None),
    ("tenants:customer-list", _("Customers"), "customers", "customers.view"),
    ("mail:home", _("Mail"), "mail", "mail.view"),
    ("cloudfiles:home", _("Cloud files"), "download", "mail.view"),
    ("servers:home", _("Servers"), "servers", "servers.view"),
    ("spamhold:home", _("Spam hold"), "spamhold", "spamhold.view"),
    ("backup:target-list", _("Backups"), "lock", "servers.view"),
    ("chat:realm-list", _("Team chat"), "users", "mail.view"),
    ("replication:list", _("Replication"), "servers", "servers.view"),
    ("clouddb:list", _("Cloud database"), "servers", "servers.view"),
    ("usage:report", _("Usage"), "building", "customers.view"),
    ("audit:record-list", _("Audit"), "audit", "audit.view"),
    ("portal:job-list", _("Jobs"), "jobs", None),
    ("tenants:settings", _("Settings"), "settings", None),
]


def portal(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    items = []
    if user is not None and user.is_authenticated:
        for url_name, label, icon, code in NAVIGATION:
            if code is None or user.has_permission(code):
                items.append({"url_name": url_name, "label": label, "icon": icon})
    else:
        user = None
    section = getattr(getattr(request, "resolver_match", None), "namespace", "")
    return {
        "navigation": items,
        "current_section": section,
        # Lazy: only pages that render the banner (full pages, not fragments) pay for it.
        "portal_notices": (lambda: notices.notices_for(user)) if user is not None else (),
    }
