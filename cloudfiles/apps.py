from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CloudfilesConfig(AppConfig):
    name = "cloudfiles"
    verbose_name = _("Cloud files")

    def ready(self) -> None:
        from deploy import desired
        from tenants.limits import register_usage_provider

        from . import jobs  # noqa: F401 (registers the link revocation job)
        from .accounts import record_converged
        from .state import add_nextcloud
        from .usage import usage_provider

        if add_nextcloud not in desired.STATE_BUILDERS:
            desired.STATE_BUILDERS.append(add_nextcloud)
        if record_converged not in desired.CONVERGED_HOOKS:
            desired.CONVERGED_HOOKS.append(record_converged)
        register_usage_provider(usage_provider)
