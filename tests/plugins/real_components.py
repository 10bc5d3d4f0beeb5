"""Under ``CI=true`` a skipped test is a failure, and the run says how many real-daemon tests ran.

The suite drives real sshd nodes, Postfix, Courier, nginx, ZFS, ClamAV, SpamAssassin,
slapd and Chromium. Their tests skip when a developer runs a partial suite without root
or without a package; that is a convenience for a developer's laptop and nothing else.
In CI (which runs ``make test`` as root, where ``scripts/install-test-packages.sh``
installs every package) nothing may skip: a skip there means a daemon did not run and the
green result would be a lie. So, when ``CI`` is ``true``:

* every skipped test (skip marker, ``skipif``, ``pytest.skip`` in a fixture or test,
  ``importorskip``) and every skipped module is reported as a failure naming the reason,
  unless its node id is in :data:`ALLOWED_SKIPS` with a reason why it may skip in CI;
* every ``xfail`` outcome is a failure too: an expected failure hides a known breakage.

In every run the terminal summary ends with one line counting the tests that ran against
real components, by component, and how many of them skipped.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

# Node id prefix -> why this test may skip even in CI. Keep it empty unless a skip is
# genuinely unavoidable on the CI machine; every entry needs a reason a reviewer accepts.
ALLOWED_SKIPS: dict[str, str] = {}

# Fixtures that start real components (tests/harness, tests/identity); a test asking for
# one of them runs against that component whatever its markers say.
COMPONENT_FIXTURES = {
    "ssh_cluster": "nodes",
    "ssh_nodes": "nodes",
    "ssh_connect": "nodes",
    "directory_server": "ldap",
    "simplesamlphp": "simplesamlphp",
}
# Folders under tests/ whose tests drive a real daemon or tool (tests/services/<name>).
COMPONENT_FOLDERS = {"converge": "converge", "services": None}

# Per run (config.stash): tests that ran / skipped, by component.
_RAN = pytest.StashKey[Counter[str]]()
_SKIPPED = pytest.StashKey[Counter[str]]()


_COMPONENT_PROPERTY = "real_component"
# pytest_runtest_logreport receives no config; the run's config is kept here.
_CONFIG: pytest.Config | None = None

SKIP_IN_CI = "skipped under CI=true, where every real component must run"


def in_ci() -> bool:
    """True when the run is CI's: the environment variable ``CI`` is ``true``."""
    return os.environ.get("CI", "").lower() == "true"


def component_of(item: pytest.Item) -> str | None:
    """The real component ``item`` needs ("nodes", "browser", "nginx", ...), or None."""
    if item.get_closest_marker("browser"):
        return "browser"
    if item.get_closest_marker("nodes"):
        return "nodes"
    for fixture in getattr(item, "fixturenames", ()):
        if fixture in COMPONENT_FIXTURES:
            return COMPONENT_FIXTURES[fixture]
    parts = Path(str(item.path)).parts
    if "tests" in parts:
        below = parts[parts.index("tests") + 1 :]
        if len(below) > 1 and below[0] in COMPONENT_FOLDERS:
            return COMPONENT_FOLDERS[below[0]] or below[1]
    return None


def _allowed(nodeid: str) -> str | None:
    for prefix, reason in ALLOWED_SKIPS.items():
        if nodeid.startswith(prefix):
            return reason
    return None


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail(report: pytest.TestReport | pytest.CollectReport, message: str) -> None:
    report.outcome = "failed"
    report.longrepr = message
    if hasattr(report, "wasxfail"):
        del report.wasxfail


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """A module skipped at import (``importorskip``, module-level skip) fails under CI."""
    report = yield
    if in_ci() and report.skipped and not _allowed(report.nodeid):
        _fail(report, f"{SKIP_IN_CI}: {_skip_reason(report)}")
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    skipped = report.skipped and not hasattr(report, "wasxfail")
    component = component_of(item)
    if component is not None and (skipped or report.when == "call"):
        # Counted where the report is logged (pytest_runtest_logreport): under pytest-xdist
        # that is the controller, which never sees the item; user_properties travel with the
        # report from the worker.
        report.user_properties.append((_COMPONENT_PROPERTY, (component, skipped)))
    if in_ci() and hasattr(report, "wasxfail"):
        _fail(report, f"xfail under CI=true hides a known failure: {report.wasxfail}")
    elif in_ci() and skipped and _allowed(item.nodeid) is None:
        _fail(report, f"{SKIP_IN_CI}: {_skip_reason(report)}")
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    counted = dict(report.user_properties).get(_COMPONENT_PROPERTY)
    if counted is None or _CONFIG is None:
        return
    component, skipped = counted
    _CONFIG.stash.setdefault(_SKIPPED if skipped else _RAN, Counter())[component] += 1


def pytest_configure(config: pytest.Config) -> None:
    global _CONFIG
    _CONFIG = config


def summary_line(config: pytest.Config) -> str:
    """The closing line: real-component tests that ran and skipped, by component."""
    _ran = config.stash.get(_RAN, Counter())
    _skipped = config.stash.get(_SKIPPED, Counter())
    total = sum(_ran.values())
    parts = ", ".join(f"{name} {count}" for name, count in sorted(_ran.items()))
    skipped = sum(_skipped.values())
    skipped_parts = ", ".join(f"{name} {count}" for name, count in sorted(_skipped.items()))
    line = f"real components: {total} tests ran against real daemons"
    if parts:
        line += f" ({parts})"
    line += f", {skipped} skipped"
    if skipped_parts:
        line += f" ({skipped_parts})"
    if not in_ci() and skipped:
        line += " (CI=true would fail them)"
    return line


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_sep("-", summary_line(terminalreporter.config))
