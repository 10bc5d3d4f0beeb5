from django.urls import path, re_path
from rest_framework.routers import SimpleRouter

from .certificates import LbCertificateDetailView, LbCertificateListView, LbCertificateRenewView
from .rule_keys import RuleChannelKeyDetailView, RuleChannelKeyListView
from .views import NodeAlertViewSet, NodeViewSet, ZoneViewSet

router = SimpleRouter()
router.register("zones", ZoneViewSet, basename="zone")
router.register("nodes", NodeViewSet, basename="node")
router.register("node-alerts", NodeAlertViewSet, basename="nodealert")

urlpatterns = [
    path("lb-certificates/", LbCertificateListView.as_view(), name="lb-certificates"),
    path("lb-certificates/renewal/", LbCertificateRenewView.as_view(), name="lb-certificate-renew"),
    # Load balancer names are fully qualified (at least one dot), so "renewal" is never one.
    re_path(
        r"^lb-certificates/(?P<name>[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+)/$",
        LbCertificateDetailView.as_view(),
        name="lb-certificate",
    ),
    path("rule-channel-keys/", RuleChannelKeyListView.as_view(), name="rule-channel-keys"),
    re_path(
        r"^rule-channel-keys/(?P<channel>[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63})+)/$",
        RuleChannelKeyDetailView.as_view(),
        name="rule-channel-key",
    ),
    *router.urls,
]
