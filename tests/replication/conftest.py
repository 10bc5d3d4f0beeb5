from tests.converge.conftest import (  # noqa: F401  (fixtures)
    controller_key,
    controller_pkey,
    mail_services,
    zone,
)

from .nodes import repl_fleet, zones_fleet  # noqa: F401
