from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class DeployConfig(AppConfig):
    name = "deploy"
    verbose_name = _("Deployment")

    def ready(self) -> None:
        from . import checks, receivers  # noqa: F401  (registers checks, connects receivers)
