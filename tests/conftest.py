"""Test-wide fixtures: the cast of administrators and API clients."""

pytest_plugins = [
    "tests.fixtures",
    "tests.harness.fixtures",
    "tests.plugins.real_components",
]
