from rest_framework.routers import SimpleRouter

from .export_views import ExportViewSet
from .views import BackupTargetViewSet, SnapshotPolicyViewSet, SnapshotViewSet

router = SimpleRouter()
router.register("backup/targets", BackupTargetViewSet, basename="backuptarget")
router.register("backup/snapshots", SnapshotViewSet, basename="snapshot")
router.register("backup/exports", ExportViewSet, basename="export")
router.register("backup/snapshot-policies", SnapshotPolicyViewSet, basename="snapshotpolicy")

# Controller dumps (operators only; backup/dumps_api.py).
from ..dumps_api import DumpViewSet  # noqa: E402

router.register("backup/dumps", DumpViewSet, basename="dump")

urlpatterns = router.urls
