"""API route of the licence (a single resource, not a collection)."""

from django.urls import path

from .api import LicenceView

urlpatterns = [path("licence/", LicenceView.as_view(), name="licence")]
