"""Portal pages of backups."""

from django.urls import path

from . import dumps_views, views

app_name = "backup"

urlpatterns = [
    path("targets/", views.TargetListView.as_view(), name="target-list"),
    path("targets/new/", views.TargetCreateView.as_view(), name="target-create"),
    path("targets/<id:pk>/edit/", views.TargetEditView.as_view(), name="target-edit"),
    path("targets/<id:pk>/delete/", views.TargetDeleteView.as_view(), name="target-delete"),
    path("targets/<id:pk>/test/", views.TargetTestView.as_view(), name="target-test"),
    path("domains/", views.DomainListView.as_view(), name="domain-list"),
    path(
        "domains/<id:pk>/snapshots/", views.DomainSnapshotsView.as_view(), name="domain-snapshots"
    ),
    path("domains/<id:pk>/snapshot-now/", views.SnapshotNowView.as_view(), name="snapshot-now"),
    path("policies/<id:pk>/", views.PolicyEditView.as_view(), name="policy"),
    # Controller dumps (operators only; backup/dumps_views.py).
    path("dumps/", dumps_views.DumpListView.as_view(), name="dump-list"),
    path("dumps/now/", dumps_views.DumpNowView.as_view(), name="dump-now"),
    path("dumps/check/<id:pk>/", dumps_views.DumpCheckView.as_view(), name="dump-check"),
]

from . import export_views  # noqa: E402

urlpatterns += [
    path("exports/", export_views.ExportListView.as_view(), name="export-list"),
    path("exports/new/", export_views.ExportCreateView.as_view(), name="export-create"),
    path(
        "exports/download/<str:signed>/",
        export_views.ExportDownloadView.as_view(),
        name="export-download",
    ),
]
