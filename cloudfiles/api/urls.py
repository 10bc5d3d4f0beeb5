"""Routes of the cloud files API under /api/v1/files/."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from .views import FilesPolicyViewSet, RevokeLinksViewSet

router = SimpleRouter()
router.register("files/policies", FilesPolicyViewSet, basename="files-policy")

urlpatterns = [
    path(
        "files/revoke-links/",
        RevokeLinksViewSet.as_view({"post": "create"}),
        name="files-revoke-links",
    ),
    *router.urls,
]
