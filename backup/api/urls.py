from rest_framework.routers import SimpleRouter

from .export_views import ExportViewSet
from .restore import RestoreViewSet
from .views import BackupTargetViewSet, SnapshotPolicyViewSet, SnapshotViewSet

router = SimpleRouter()
router.register("backup/targets", BackupTargetViewSet, basename="backuptarget")
router.register("backup/snapshots", SnapshotViewSet, basename="snapshot")
router.register("backup/exports", ExportViewSet, basename="export")
router.register("backup/snapshot-policies", SnapshotPolicyViewSet, basename="snapshotpolicy")
router.register("backup/restores", RestoreViewSet, basename="restore")

# Controller dumps (operators only; backup/dumps_api.py).
from ..dumps_api import DumpViewSet  # noqa: E402

router.register("backup/dumps", DumpViewSet, basename="dump")

urlpatterns = router.urls

# Exclusion policies and per mail store settings (backup/api/exclusions.py).
from . import exclusions as ex  # noqa: E402

for _prefix, _viewset, _basename in (
    ("backup/exclusions", ex.ExclusionViewSet, "backupexclusion"),
    ("backup/exclusions/customers", ex.CustomerExclusionViewSet, "customerexclusion"),
    ("backup/exclusions/domains", ex.DomainExclusionViewSet, "domainexclusion"),
    ("backup/exclusions/mailboxes", ex.MailboxExclusionViewSet, "mailboxexclusion"),
    ("backup/mail-stores", ex.MailStoreSettingsViewSet, "mailstoresettings"),
    ("backup/tier-usage", ex.TierUsageViewSet, "tierusage"),
):
    router.register(_prefix, _viewset, basename=_basename)

# Off-node copies (backup/api/offnode.py).
from .offnode import OffnodeCopyViewSet, OffnodeSettingViewSet  # noqa: E402

router.register("backup/offnode-settings", OffnodeSettingViewSet, basename="offnodesetting")
router.register("backup/offnode-copies", OffnodeCopyViewSet, basename="offnodecopy")
urlpatterns = router.urls
