"""Portal pages of usage: the open quota warnings in the user's part of the tree."""

from __future__ import annotations

from django.db import models

from tenants.permissions import MAIL_VIEW
from ums.portal.views import ScopedListView

from .models import QuotaWarning


class QuotaWarningListView(ScopedListView):
    template_name = "usage/quota_warnings.html"
    permission_required = MAIL_VIEW
    model = QuotaWarning
    ordering = "-id"

    def filter_queryset(self, queryset: models.QuerySet) -> models.QuerySet:
        return queryset.filter(is_open=True).select_related("mailbox", "customer")
