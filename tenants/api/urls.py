from rest_framework.routers import SimpleRouter

from .identity_views import (
    LdapDirectoryViewSet,
    SamlProviderViewSet,
    SessionViewSet,
    TwoFactorPolicyViewSet,
    TwoFactorStatusViewSet,
)
from .views import AdministratorViewSet, ApiTokenViewSet, CustomerViewSet

router = SimpleRouter()
router.register("customers", CustomerViewSet, basename="customer")
router.register("administrators", AdministratorViewSet, basename="administrator")
router.register("tokens", ApiTokenViewSet, basename="apitoken")
router.register("two-factor-policies", TwoFactorPolicyViewSet, basename="twofactorpolicy")
router.register("two-factor", TwoFactorStatusViewSet, basename="twofactor")
router.register("sessions", SessionViewSet, basename="session")
router.register("saml-providers", SamlProviderViewSet, basename="samlprovider")
router.register("ldap-directories", LdapDirectoryViewSet, basename="ldapdirectory")

urlpatterns = router.urls
