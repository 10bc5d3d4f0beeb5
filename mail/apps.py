"""App configuration: mail reports its resource usage to tenants at start-up."""

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MailConfig(AppConfig):
    name = "mail"
    verbose_name = _("Mail")

    def ready(self) -> None:
        from tenants.limits import register_usage_provider

        from .limits import usage_provider

        # Tenants owns the limits but cannot import mail: mail reports its usage to it.
        register_usage_provider(usage_provider)
