"""Portal pages of usage."""

from django.urls import path

from . import views

app_name = "usage"

urlpatterns = [
    path("", views.UsageReportView.as_view(), name="report"),
    path("quota-warnings/", views.QuotaWarningListView.as_view(), name="quota-warnings"),
]
