from rest_framework.routers import SimpleRouter

from .views import BackupTargetViewSet, SnapshotPolicyViewSet, SnapshotViewSet

router = SimpleRouter()
router.register("backup/targets", BackupTargetViewSet, basename="backuptarget")
router.register("backup/snapshots", SnapshotViewSet, basename="snapshot")
router.register("backup/snapshot-policies", SnapshotPolicyViewSet, basename="snapshotpolicy")

urlpatterns = router.urls

# Off-node copies (backup/api/offnode.py).
from .offnode import OffnodeCopyViewSet, OffnodeSettingViewSet  # noqa: E402

router.register("backup/offnode-settings", OffnodeSettingViewSet, basename="offnodesetting")
router.register("backup/offnode-copies", OffnodeCopyViewSet, basename="offnodecopy")
urlpatterns = router.urls
