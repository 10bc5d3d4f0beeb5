"""Root URL configuration: the portal, the API under /api/v1/, schema and local docs."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from ums.api.errors import not_found_json
from ums.api.schema import TaggedSchemaGenerator
from ums.portal import errors as portal_errors

urlpatterns = [
    path("api/v1/", include("ums.api.urls")),
    path(
        "api/schema/",
        SpectacularAPIView.as_view(generator_class=TaggedSchemaGenerator),
        name="schema",
    ),
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="schema"),
        name="api-docs",
    ),
    path("i18n/", include("django.conf.urls.i18n")),
    path("", include("ums.portal.urls")),
    path("", include("tenants.urls")),
    path("audit/", include("audit.urls")),
    path("mail/", include("mail.urls")),
    path("files/", include("cloudfiles.urls")),
    path("servers/", include("servers.urls")),
    path("spamhold/", include("spamhold.urls")),
    path("backup/", include("backup.urls")),
    path("chat/", include("chat.urls")),
    path("settings/licence/", include("licensing.urls")),
    path("usage/", include("usage.urls")),
    path("replication/", include("replication.urls")),
    path("clouddb/", include("clouddb.urls")),
    path("servers/enrolment/", include("servers.enrolment_urls")),
    path("install/", include("servers.install_urls")),
]


def handler404(request, exception=None):
    if request.path.startswith("/api/"):
        return not_found_json(request, exception)
    return portal_errors.not_found(request, exception)


handler403 = "ums.portal.errors.permission_denied"
handler500 = "ums.portal.errors.server_error"
