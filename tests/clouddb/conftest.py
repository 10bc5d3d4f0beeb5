from tests.servers.conftest import controller_key, controller_pkey, zone  # noqa: F401

from .nodes import db_fleet  # noqa: F401
