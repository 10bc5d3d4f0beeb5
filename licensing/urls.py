"""Portal pages of the licence."""

from django.urls import path

from . import views

app_name = "licensing"

urlpatterns = [
    path("", views.LicenceView.as_view(), name="licence"),
]
