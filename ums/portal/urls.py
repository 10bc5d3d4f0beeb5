"""Portal URL wiring: each app's pages under its own prefix and namespace."""

from django.urls import include, path

from . import home, jobs

app_name = "portal"

urlpatterns = [
    path("", home.HomeView.as_view(), name="home"),
    path("", include("tenants.auth_urls")),
    path("jobs/", jobs.JobListView.as_view(), name="job-list"),
    path("jobs/<id:pk>/", jobs.JobDetailView.as_view(), name="job-detail"),
    path("jobs/<id:pk>/status/", jobs.JobStatusView.as_view(), name="job-status"),
]
