"""Portal pages of the cloud database."""

from django.urls import path

from . import views

app_name = "clouddb"

urlpatterns = [
    path("", views.CloudDbListView.as_view(), name="list"),
    path("<int:pk>/failover/", views.CloudDbFailoverView.as_view(), name="failover"),
]
