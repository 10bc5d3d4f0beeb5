"""Portal pages of the servers section."""

from django.urls import path

from office import views as office_views

from . import certificate_views, rule_key_views, views

app_name = "servers"

urlpatterns = [
    path("", views.DashboardView.as_view(), name="home"),
    path("nodes/<id:pk>/", views.NodeDetailView.as_view(), name="node-detail"),
    path("nodes/<id:pk>/edit/", views.NodeEditView.as_view(), name="node-edit"),
    path("nodes/<id:pk>/approve/", views.NodeApproveView.as_view(), name="node-approve"),
    path(
        "nodes/<id:pk>/actions/<slug:name>/",
        views.NodeActionView.as_view(),
        name="node-action",
    ),
    path(
        "nodes/<id:pk>/office-console/",
        office_views.ConsoleRevealView.as_view(),
        name="office-console-reveal",
    ),
    path("zones/", views.ZoneListView.as_view(), name="zone-list"),
    path("zones/new/", views.ZoneCreateView.as_view(), name="zone-create"),
    path("zones/<id:pk>/edit/", views.ZoneEditView.as_view(), name="zone-edit"),
    path("zones/<id:pk>/delete/", views.ZoneDeleteView.as_view(), name="zone-delete"),
    path(
        "certificates/",
        certificate_views.CertificateListView.as_view(),
        name="certificate-list",
    ),
    path(
        "certificates/issuer/",
        certificate_views.CertificateIssuerView.as_view(),
        name="certificate-issuer",
    ),
    path(
        "certificates/renew/",
        certificate_views.CertificateRenewView.as_view(),
        name="certificate-renew",
    ),
    path("rule-keys/", rule_key_views.RuleKeyListView.as_view(), name="rule-key-list"),
    path(
        "rule-keys/<str:channel>/delete/",
        rule_key_views.RuleKeyDeleteView.as_view(),
        name="rule-key-delete",
    ),
]
