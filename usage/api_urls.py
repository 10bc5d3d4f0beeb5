"""API routes of usage reports."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from .api import MonthlyRecipientViewSet, UsageReportCsvView, UsageReportView

router = SimpleRouter()
router.register("usage/monthly-recipients", MonthlyRecipientViewSet, basename="monthlyrecipient")

urlpatterns = [
    path("usage/", UsageReportView.as_view(), name="usage-report"),
    path("usage/csv/", UsageReportCsvView.as_view(), name="usage-report-csv"),
    *router.urls,
]
