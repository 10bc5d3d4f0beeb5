from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class UsageConfig(AppConfig):
    name = "usage"
    verbose_name = _("Usage")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from ums.portal import notices

        from . import quota_warnings

        notices.register_notice_provider(quota_warnings.quota_notices)
