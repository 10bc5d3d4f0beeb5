from django.apps import AppConfig


class UmsConfig(AppConfig):
    name = "ums"
    verbose_name = "UMS machinery"

    def ready(self) -> None:
        from . import converters  # noqa: F401  (registers the <id:...> path converter)
