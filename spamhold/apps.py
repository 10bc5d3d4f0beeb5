from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class SpamholdConfig(AppConfig):
    name = "spamhold"
    verbose_name = _("Spam hold")
