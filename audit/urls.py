"""Portal audit search, its CSV export and the history of one object."""

from django.urls import path, re_path

from . import views

app_name = "audit"

urlpatterns = [
    path("", views.AuditRecordListView.as_view(), name="record-list"),
    path("export.csv", views.AuditExportView.as_view(), name="record-export"),
    re_path(
        r"^history/(?P<object_type>[a-z0-9_]{1,30}\.[a-z0-9_]{1,33})/(?P<object_id>[0-9]{1,18})/$",
        views.ObjectHistoryView.as_view(),
        name="object-history",
    ),
]
