"""Portal pages of customers, administrators and the administrator's own settings.

Ids use the ``id`` converter of :mod:`ums.converters` (at most 18 digits: 404, not overflow).
"""

from django.urls import path

from . import identity_views, views
from .sso import views as sso_views

app_name = "tenants"

urlpatterns = [
    path("customers/", views.CustomerListView.as_view(), name="customer-list"),
    path("customers/<id:pk>/", views.CustomerDetailView.as_view(), name="customer-detail"),
    path(
        "customers/<id:pk>/children/",
        views.CustomerChildrenView.as_view(),
        name="customer-children",
    ),
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
    # Second factors and sessions of the signed-in administrator.
    path(
        "settings/two-factor/",
        identity_views.TwoFactorSettingsView.as_view(),
        name="two-factor",
    ),
    path("settings/two-factor/app/", identity_views.TotpEnrolView.as_view(), name="totp-enrol"),
    path(
        "settings/two-factor/app/remove/",
        identity_views.TotpRemoveView.as_view(),
        name="totp-remove",
    ),
    path(
        "settings/two-factor/recovery-codes/",
        identity_views.RecoveryCodesView.as_view(),
        name="recovery-codes",
    ),
    path(
        "settings/security-keys/options/",
        identity_views.SecurityKeyOptionsView.as_view(),
        name="security-key-options",
    ),
    path(
        "settings/security-keys/",
        identity_views.SecurityKeyRegisterView.as_view(),
        name="security-key-register",
    ),
    path(
        "settings/security-keys/<id:pk>/delete/",
        identity_views.SecurityKeyDeleteView.as_view(),
        name="security-key-delete",
    ),
    path("settings/sessions/", identity_views.SessionListView.as_view(), name="sessions"),
    path(
        "settings/sessions/<id:pk>/revoke/",
        identity_views.SessionRevokeView.as_view(),
        name="session-revoke",
    ),
    path(
        "settings/sessions/revoke-others/",
        identity_views.SessionRevokeOthersView.as_view(),
        name="sessions-revoke-others",
    ),
    # A customer's sign-in settings and another administrator's second factor.
    path(
        "customers/<id:pk>/identity/",
        identity_views.CustomerIdentityView.as_view(),
        name="customer-identity",
    ),
    path(
        "customers/<id:pk>/identity/two-factor/",
        identity_views.CustomerTwoFactorPolicyView.as_view(),
        name="customer-two-factor-policy",
    ),
    path(
        "customers/<id:pk>/identity/saml/",
        identity_views.CustomerSamlView.as_view(),
        name="customer-saml",
    ),
    path(
        "customers/<id:pk>/identity/saml/delete/",
        identity_views.CustomerSamlDeleteView.as_view(),
        name="customer-saml-delete",
    ),
    path(
        "customers/<id:pk>/identity/ldap/",
        identity_views.CustomerLdapView.as_view(),
        name="customer-ldap",
    ),
    path(
        "customers/<id:pk>/identity/ldap/delete/",
        identity_views.CustomerLdapDeleteView.as_view(),
        name="customer-ldap-delete",
    ),
    path(
        "administrators/<id:pk>/reset-two-factor/",
        identity_views.AdministratorResetTwoFactorView.as_view(),
        name="administrator-reset-two-factor",
    ),
    # SAML single sign-on per customer (no login needed: these are how one logs in).
    path("sso/", sso_views.SsoStartView.as_view(), name="sso-start"),
    path(
        "sso/saml/<slug:slug>/metadata/",
        sso_views.SamlMetadataView.as_view(),
        name="saml-metadata",
    ),
    path("sso/saml/<slug:slug>/login/", sso_views.SamlLoginView.as_view(), name="saml-login"),
    path("sso/saml/<slug:slug>/acs/", sso_views.SamlAcsView.as_view(), name="saml-acs"),
]
