from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = _("Customers and administrators")

    def ready(self) -> None:
        from . import signals  # noqa: F401  (connects the login audit receivers)
        from .api import schema  # noqa: F401  (registers the token scheme for OpenAPI)
