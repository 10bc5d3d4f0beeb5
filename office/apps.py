from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class OfficeConfig(AppConfig):
    name = "office"
    verbose_name = _("Office")

    def ready(self) -> None:
        from deploy import desired

        from . import jobs  # noqa: F401 (registers the office check node action)
        from .state import add_collabora

        if add_collabora not in desired.STATE_BUILDERS:
            desired.STATE_BUILDERS.append(add_collabora)
