"""Routes of the mail API under /api/v1/mail/."""

from rest_framework.routers import SimpleRouter

from . import views

router = SimpleRouter()
router.register("mail/domains", views.DomainViewSet, basename="mail-domain")
router.register("mail/domain-aliases", views.DomainAliasViewSet, basename="mail-domain-alias")
router.register("mail/dkim-keys", views.DkimKeyViewSet, basename="mail-dkim-key")
router.register("mail/mailboxes", views.MailboxViewSet, basename="mail-mailbox")
router.register("mail/aliases", views.AliasViewSet, basename="mail-alias")
router.register("mail/autoresponders", views.AutoResponderViewSet, basename="mail-autoresponder")
router.register("mail/sieve-scripts", views.SieveScriptViewSet, basename="mail-sieve-script")
router.register(
    "mail/customer-policies", views.CustomerPolicyViewSet, basename="mail-customer-policy"
)
router.register("mail/domain-policies", views.DomainPolicyViewSet, basename="mail-domain-policy")
router.register("mail/limits", views.ResourceLimitViewSet, basename="mail-limit")
router.register("mail/address-books", views.AddressBookViewSet, basename="mail-address-book")
router.register("mail/imports", views.CsvImportViewSet, basename="mail-import")

urlpatterns = router.urls
