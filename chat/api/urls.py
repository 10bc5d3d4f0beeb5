from rest_framework.routers import SimpleRouter

from .views import ChatAccountViewSet, ChatRealmViewSet

router = SimpleRouter()
router.register("chat/realms", ChatRealmViewSet, basename="chatrealm")
router.register("chat/accounts", ChatAccountViewSet, basename="chataccount")

urlpatterns = router.urls
