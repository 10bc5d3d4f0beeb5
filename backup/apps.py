from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class BackupConfig(AppConfig):
    name = "backup"
    verbose_name = _("Backups")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from deploy import desired

        from .store_settings import node_overrides

        if node_overrides not in desired.NODE_OVERRIDES:
            desired.NODE_OVERRIDES.append(node_overrides)
