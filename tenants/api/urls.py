from rest_framework.routers import SimpleRouter

from .views import AdministratorViewSet, ApiTokenViewSet, CustomerViewSet

router = SimpleRouter()
router.register("customers", CustomerViewSet, basename="customer")
router.register("administrators", AdministratorViewSet, basename="administrator")
router.register("tokens", ApiTokenViewSet, basename="apitoken")

urlpatterns = router.urls
