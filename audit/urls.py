"""Portal audit search and its CSV export."""

from django.urls import path

from . import views

app_name = "audit"

urlpatterns = [
    path("", views.AuditRecordListView.as_view(), name="record-list"),
    path("export.csv", views.AuditExportView.as_view(), name="record-export"),
]
