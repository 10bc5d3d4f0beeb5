from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class BackupConfig(AppConfig):
    name = "backup"
    verbose_name = _("Backups")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from deploy import desired

        from . import holders
        from .offnode_archive_holder import HOLDER as archive_holder
        from .offnode_holder import HOLDER as offnode_holder
        from .purge_holders import register_all
        from .rebuild_holder import RebuildStagingHolder
        from .restore_holder import RestoreCloneHolder
        from .store_settings import node_overrides
        from .tier_holder import holder as tier_holder

        # Everything that can hold a mailbox's messages, for permanent deletion.
        register_all()  # local snapshots and exports
        holders.register(RestoreCloneHolder())  # restore clones
        holders.register(offnode_holder)  # copies on the backup node and on targets
        holders.register(archive_holder)  # Maildir archives on targets
        holders.register(RebuildStagingHolder())  # given-up rebuilds from an archive
        holders.register(tier_holder)  # tiered message copies (storage tiering)

        if node_overrides not in desired.NODE_OVERRIDES:
            desired.NODE_OVERRIDES.append(node_overrides)
