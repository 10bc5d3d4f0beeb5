"""Portal pages of backups."""

from django.urls import path

from . import restore_views, views

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
    path(
        "snapshots/<id:pk>/restore/", restore_views.RestoreView.as_view(), name="snapshot-restore"
    ),
    path(
        "mailboxes/<id:pk>/snapshots/",
        restore_views.MailboxSnapshotsView.as_view(),
        name="mailbox-snapshots",
    ),
]
