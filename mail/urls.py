"""Portal URLs of the mail app (namespace "mail"; "home" is the domain list)."""

from django.urls import path

from . import views

app_name = "mail"

urlpatterns = [
    path("", views.DomainListView.as_view(), name="home"),
    path("domains/new/", views.DomainCreateView.as_view(), name="domain-create"),
    path("domains/<int:pk>/", views.DomainDetailView.as_view(), name="domain-detail"),
    path("domains/<int:pk>/aliases/", views.DomainAliasesView.as_view(), name="domain-aliases"),
    path("domains/<int:pk>/policy/", views.DomainPolicyView.as_view(), name="domain-policy"),
    path("domains/<int:pk>/dkim/", views.DomainDkimView.as_view(), name="domain-dkim"),
    path(
        "domains/<int:pk>/dkim/generate/",
        views.DomainDkimActionView.as_view(),
        name="domain-dkim-generate",
    ),
    path(
        "domains/<int:pk>/dkim/rotate/",
        views.DomainDkimActionView.as_view(rotate=True),
        name="domain-dkim-rotate",
    ),
    path(
        "domains/<int:pk>/dkim/check/",
        views.DomainDkimCheckView.as_view(),
        name="domain-dkim-check",
    ),
    path("domains/<int:pk>/edit/", views.DomainEditView.as_view(), name="domain-edit"),
    path("domains/<int:pk>/delete/", views.DomainDeleteView.as_view(), name="domain-delete"),
    path("domains/<int:pk>/export/", views.ExportView.as_view(), name="domain-export"),
    path(
        "domains/<int:pk>/domain-aliases/new/",
        views.DomainAliasCreateView.as_view(),
        name="domain-alias-create",
    ),
    path(
        "domain-aliases/<int:pk>/delete/",
        views.DomainAliasDeleteView.as_view(),
        name="domain-alias-delete",
    ),
    path(
        "domains/<int:pk>/mailboxes/new/", views.MailboxCreateView.as_view(), name="mailbox-create"
    ),
    path("domains/<int:pk>/mailboxes/bulk/", views.MailboxBulkView.as_view(), name="mailbox-bulk"),
    path("domains/<int:pk>/aliases/new/", views.AliasCreateView.as_view(), name="alias-create"),
    path("mailboxes/", views.MailboxSearchView.as_view(), name="mailbox-search"),
    path("mailboxes/<int:pk>/", views.MailboxEditView.as_view(), name="mailbox-edit"),
    path(
        "mailboxes/<int:pk>/password/",
        views.MailboxPasswordView.as_view(),
        name="mailbox-password",
    ),
    path("mailboxes/<int:pk>/delete/", views.MailboxDeleteView.as_view(), name="mailbox-delete"),
    path(
        "mailboxes/<int:pk>/webmail-two-factor/",
        views.MailboxWebmailTwoFactorView.as_view(),
        name="mailbox-webmail-2fa",
    ),
    path(
        "mailboxes/<int:pk>/autoresponder/",
        views.AutoResponderView.as_view(),
        name="mailbox-autoresponder",
    ),
    path("mailboxes/<int:pk>/filters/", views.MailboxFiltersView.as_view(), name="mailbox-filters"),
    path(
        "mailboxes/<int:pk>/filters/raw/",
        views.MailboxRawSieveView.as_view(),
        name="mailbox-filters-raw",
    ),
    path(
        "filters/<int:pk>/activate/",
        views.SieveScriptSwitchView.as_view(),
        name="filter-activate",
    ),
    path(
        "filters/<int:pk>/deactivate/",
        views.SieveScriptSwitchView.as_view(active=False),
        name="filter-deactivate",
    ),
    path("aliases/<int:pk>/", views.AliasEditView.as_view(), name="alias-edit"),
    path("aliases/<int:pk>/delete/", views.AliasDeleteView.as_view(), name="alias-delete"),
    path("customers/<int:pk>/", views.CustomerMailView.as_view(), name="customer"),
    path("customers/<int:pk>/limits/", views.CustomerLimitView.as_view(), name="customer-limits"),
    path(
        "customers/<int:pk>/addressbook.vcf",
        views.AddressBookExportView.as_view(),
        name="addressbook-export",
    ),
    path("import/", views.CsvImportView.as_view(), name="import"),
    path("export/", views.ExportView.as_view(), name="export"),
]
