from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class BackupConfig(AppConfig):
    name = "backup"
    verbose_name = _("Backups")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import holders
        from .offnode_holder import HOLDER as offnode_holder

        holders.register(offnode_holder)
