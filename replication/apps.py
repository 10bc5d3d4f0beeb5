from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ReplicationConfig(AppConfig):
    name = "replication"
    verbose_name = _("Replication")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from deploy import desired

        from .fencing import node_overrides

        # deploy may not import this app: the node's replica datasets reach its desired
        # state (the ZFS service keeps them read-only and unmounted) through this hook.
        if node_overrides not in desired.NODE_OVERRIDES:
            desired.NODE_OVERRIDES.append(node_overrides)
