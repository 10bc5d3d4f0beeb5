"""The API root: every app's router under /api/v1/."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from ums.api.jobs import JobViewSet

router = SimpleRouter()
router.register("jobs", JobViewSet, basename="job")

urlpatterns = [
    *router.urls,
    path("", include("tenants.api.urls")),
    path("", include("audit.api.urls")),
    path("", include("mail.api.urls")),
    path("", include("spamhold.api.urls")),
    path("", include("servers.api.urls")),
    path("", include("servers.api.enrolment_urls")),
]
