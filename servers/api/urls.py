from rest_framework.routers import SimpleRouter

from .views import NodeAlertViewSet, NodeViewSet, ZoneViewSet

router = SimpleRouter()
router.register("zones", ZoneViewSet, basename="zone")
router.register("nodes", NodeViewSet, basename="node")
router.register("node-alerts", NodeAlertViewSet, basename="nodealert")

urlpatterns = router.urls
