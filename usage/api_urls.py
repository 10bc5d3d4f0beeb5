"""API routes of usage reports."""

from django.urls import path

from .api import UsageReportCsvView, UsageReportView

urlpatterns = [
    path("usage/", UsageReportView.as_view(), name="usage-report"),
    path("usage/csv/", UsageReportCsvView.as_view(), name="usage-report-csv"),
]
