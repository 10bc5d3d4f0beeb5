"""Portal pages of customers, administrators and the administrator's own settings."""

from django.urls import path

from . import views

app_name = "tenants"

urlpatterns = [
    path("customers/", views.CustomerListView.as_view(), name="customer-list"),
    path("settings/", views.SettingsView.as_view(), name="settings"),
]
