from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ClouddbConfig(AppConfig):
    name = "clouddb"
    verbose_name = _("Cloud database replication")
    default_auto_field = "django.db.models.BigAutoField"
