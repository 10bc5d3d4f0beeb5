"""Portal URL wiring: each app's pages under its own prefix and namespace."""

from django.urls import include, path

from . import home

app_name = "portal"

urlpatterns = [
    path("", home.HomeView.as_view(), name="home"),
    path("", include("tenants.auth_urls")),
]
