"""The API root: every app's router under /api/v1/."""

from django.urls import include, path

urlpatterns = [
    path("", include("tenants.api.urls")),
    path("", include("audit.api.urls")),
]
