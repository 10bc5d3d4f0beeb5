"""The API under /api/v1/: its root (the list of collections) and every app's router."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from ums.api.jobs import JobViewSet
from ums.api.root import ApiRootView

router = SimpleRouter()
router.register("jobs", JobViewSet, basename="job")

urlpatterns = [
    path("", ApiRootView.as_view(), name="api-root"),
    *router.urls,
    path("", include("tenants.api.urls")),
    path("", include("audit.api.urls")),
    path("", include("mail.api.urls")),
    path("", include("spamhold.api.urls")),
    path("", include("cloudfiles.api.urls")),
    path("", include("servers.api.urls")),
    path("", include("servers.api.enrolment_urls")),
    path("", include("backup.api.urls")),
    path("", include("licensing.api_urls")),
    path("", include("usage.api_urls")),
    path("", include("chat.api.urls")),
    path("", include("replication.api")),
    path("", include("clouddb.api.views")),
]
