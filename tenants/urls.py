"""Portal pages of customers, administrators and the administrator's own settings.

Ids use the ``id`` converter of :mod:`ums.converters` (at most 18 digits: 404, not overflow).
"""

from django.urls import path

from . import views

app_name = "tenants"

urlpatterns = [
    path("customers/", views.CustomerListView.as_view(), name="customer-list"),
    path("customers/<id:pk>/", views.CustomerDetailView.as_view(), name="customer-detail"),
    path("customers/<id:pk>/new/", views.CustomerCreateView.as_view(), name="customer-create"),
    path("customers/<id:pk>/edit/", views.CustomerEditView.as_view(), name="customer-edit"),
    path("customers/<id:pk>/move/", views.CustomerMoveView.as_view(), name="customer-move"),
    path(
        "customers/<id:pk>/disable/",
        views.CustomerSetActiveView.as_view(active=False),
        name="customer-disable",
    ),
    path(
        "customers/<id:pk>/enable/",
        views.CustomerSetActiveView.as_view(active=True),
        name="customer-enable",
    ),
    path("customers/<id:pk>/delete/", views.CustomerDeleteView.as_view(), name="customer-delete"),
    path("administrators/", views.AdministratorListView.as_view(), name="administrator-list"),
    path(
        "administrators/new/", views.AdministratorCreateView.as_view(), name="administrator-create"
    ),
    path(
        "administrators/<id:pk>/",
        views.AdministratorDetailView.as_view(),
        name="administrator-detail",
    ),
    path(
        "administrators/<id:pk>/edit/",
        views.AdministratorEditView.as_view(),
        name="administrator-edit",
    ),
    path(
        "administrators/<id:pk>/password/",
        views.AdministratorPasswordView.as_view(),
        name="administrator-password",
    ),
    path(
        "administrators/<id:pk>/delete/",
        views.AdministratorDeleteView.as_view(),
        name="administrator-delete",
    ),
    path("settings/", views.SettingsView.as_view(), name="settings"),
    path("settings/password/", views.OwnPasswordView.as_view(), name="password-change"),
    path("settings/tokens/new/", views.TokenCreateView.as_view(), name="token-create"),
    path("settings/tokens/<id:pk>/revoke/", views.TokenRevokeView.as_view(), name="token-revoke"),
]
