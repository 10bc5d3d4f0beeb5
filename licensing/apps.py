from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class LicensingConfig(AppConfig):
    name = "licensing"
    verbose_name = _("Licensing")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from ums.portal import dashboard, notices

        from . import banner

        notices.register_notice_provider(banner.licence_notices)
        dashboard.register_stat_provider(banner.licence_stat)
