"""Portal pages of usage."""

from django.urls import path

from . import views

app_name = "usage"

urlpatterns = [
    path("", views.UsageReportView.as_view(), name="report"),
    path("monthly/add/", views.MonthlyRecipientAddView.as_view(), name="monthly-add"),
    path(
        "monthly/<int:pk>/remove/",
        views.MonthlyRecipientRemoveView.as_view(),
        name="monthly-remove",
    ),
    path("quota-warnings/", views.QuotaWarningListView.as_view(), name="quota-warnings"),
]
