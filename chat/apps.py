from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ChatConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "chat"
    verbose_name = _("Team chat")

    def ready(self) -> None:
        from tenants.limits import register_usage_provider

        from . import limits, receivers  # noqa: F401  (connects the mail_changed receiver)

        register_usage_provider(limits.usage_of_subtrees)
