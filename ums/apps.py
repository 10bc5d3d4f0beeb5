from django.apps import AppConfig


class UmsConfig(AppConfig):
    name = "ums"
    verbose_name = "UMS machinery"

    def ready(self) -> None:
        # Imported for their side effects: the <id:...> path converter, `check --deploy`'s
        # additions.
        from . import converters, deploy_checks, fastdb  # noqa: F401

        fastdb.connect()
