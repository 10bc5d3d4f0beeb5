"""Portal pages of backups."""

from django.urls import path

from . import views

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
]

# Off-node copies (backup/offnode_views.py).
from . import offnode_views  # noqa: E402

urlpatterns += [
    path("offnode/", offnode_views.OffnodeListView.as_view(), name="offnode-list"),
    path("offnode/<id:pk>/", offnode_views.OffnodeSettingView.as_view(), name="offnode-setting"),
    path(
        "offnode/<id:pk>/copy-now/",
        offnode_views.OffnodeCopyNowView.as_view(),
        name="offnode-copy-now",
    ),
    path("offnode/<id:pk>/rebuild/", offnode_views.RebuildView.as_view(), name="offnode-rebuild"),
]
