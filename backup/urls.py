"""Portal pages of backups."""

from django.urls import path

from . import dumps_views, restore_views, views

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
    path("snapshots/<id:pk>/delete/", views.SnapshotDeleteView.as_view(), name="snapshot-delete"),
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

# Exclusion policies and per mail store settings (backup/exclusion_views.py).
from . import exclusion_views as ev  # noqa: E402

urlpatterns += [
    path("exclusions/", ev.ExclusionListView.as_view(), name="exclusion-list"),
    path(
        "exclusions/customers/<id:pk>/",
        ev.CustomerExclusionView.as_view(),
        name="exclusion-customer",
    ),
    path("exclusions/domains/<id:pk>/", ev.DomainExclusionView.as_view(), name="exclusion-domain"),
    path(
        "exclusions/mailboxes/<id:pk>/",
        ev.MailboxExclusionView.as_view(),
        name="exclusion-mailbox",
    ),
    path("domains/<id:pk>/mailbox/", ev.MailboxLookupView.as_view(), name="mailbox-lookup"),
    path(
        "mailboxes/<id:pk>/snapshots/",
        ev.MailboxSnapshotsView.as_view(),
        name="mailbox-snapshots",
    ),
    path("mail-stores/", ev.MailStoreListView.as_view(), name="store-list"),
    path("mail-stores/<id:pk>/", ev.MailStoreSettingsView.as_view(), name="store"),
    path("mail-stores/<id:pk>/tier-now/", views.TierNowView.as_view(), name="store-tier-now"),
    path(
        "snapshots/<id:pk>/restore/", restore_views.RestoreView.as_view(), name="snapshot-restore"
    ),
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
    path(
        "offnode/<id:pk>/verify/", offnode_views.OffnodeVerifyView.as_view(), name="offnode-verify"
    ),
    path(
        "domains/<id:pk>/verify-copies/",
        offnode_views.DomainVerifyView.as_view(),
        name="domain-verify-copies",
    ),
    path("offnode/<id:pk>/rebuild/", offnode_views.RebuildView.as_view(), name="offnode-rebuild"),
]

# Restores from Maildir archive copies (backup/archive_restore_views.py).
from . import archive_restore_views  # noqa: E402

urlpatterns += [
    path(
        "offnode/copies/<id:pk>/restore/",
        archive_restore_views.ArchiveRestoreView.as_view(),
        name="archive-restore",
    ),
]
