from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class BackupConfig(AppConfig):
    name = "backup"
    verbose_name = _("Backups")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from deploy import desired

        from . import holders
        from .purge_holders import register_all
        from .restore_holder import RestoreCloneHolder
        from .store_settings import node_overrides

        register_all()  # local snapshots and exports, for permanent deletion
        holders.register(RestoreCloneHolder())  # restore clones hold a domain's mail

        if node_overrides not in desired.NODE_OVERRIDES:
            desired.NODE_OVERRIDES.append(node_overrides)
