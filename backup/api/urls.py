from rest_framework.routers import SimpleRouter

from .restore import RestoreViewSet
from .views import BackupTargetViewSet, SnapshotPolicyViewSet, SnapshotViewSet

router = SimpleRouter()
router.register("backup/targets", BackupTargetViewSet, basename="backuptarget")
router.register("backup/snapshots", SnapshotViewSet, basename="snapshot")
router.register("backup/snapshot-policies", SnapshotPolicyViewSet, basename="snapshotpolicy")
router.register("backup/restores", RestoreViewSet, basename="restore")

urlpatterns = router.urls
