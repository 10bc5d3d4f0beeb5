"""Fixtures for the connector tests: the sshd test-node harness.

Once tests/conftest.py registers ``pytest_plugins = ["tests.harness.fixtures"]`` this
import is skipped, so the session cluster is not defined (and started) twice.
"""

import sys

if "tests.harness.fixtures" not in sys.modules:
    from tests.harness.fixtures import *  # noqa: F403
