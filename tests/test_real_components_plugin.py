"""The CI guard of tests/plugins/real_components.py, run on a tiny suite in a real pytest.

Each case runs pytest in a subprocess (with and without ``CI=true``) on a temporary test
file that has a real-component test that runs, skips of every kind (marker, fixture,
test body, module import) and an xfail, and reads the outcome and the closing line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TINY_SUITE = """
import pytest

@pytest.fixture
def daemon():
    pytest.skip("daemon needs root")

@pytest.mark.nodes
def test_node_runs():
    pass

@pytest.mark.browser
def test_browser_skips():
    pytest.skip("no chromium on this laptop")

@pytest.mark.skipif(True, reason="developer-only guard")
def test_plain_skipif():
    pass

@pytest.mark.nodes
def test_fixture_skip(daemon):
    pass

@pytest.mark.xfail(reason="known breakage")
def test_expected_failure():
    assert False
"""
MISSING_IMPORT = (
    'import pytest\n\npytest.importorskip("ums_no_such_module")\n\n\ndef test_x():\n    pass\n'
)
INI = "[pytest]\nmarkers =\n    nodes: real nodes\n    browser: real browser\n"


def run_tiny(
    tmp_path: Path, ci: str | None, suite: str = TINY_SUITE
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_tiny.py").write_text(suite)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "DJANGO_SETTINGS_MODULE")}
    env["PYTHONPATH"] = str(ROOT)
    if ci is not None:
        env["CI"] = ci
    args = ["-p", "tests.plugins.real_components", "-p", "no:django", "-p", "no:cacheprovider"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rA", *args, str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_ci_skips_stay_skips(tmp_path: Path) -> None:
    result = run_tiny(tmp_path, ci=None)
    assert result.returncode == 0, result.stdout
    assert "1 passed, 3 skipped, 1 xfailed" in result.stdout
    assert (
        "real components: 1 tests ran against real daemons (nodes 1), 2 skipped "
        "(browser 1, nodes 1) (CI=true would fail them)" in result.stdout
    )


def test_under_ci_every_skip_and_xfail_fails_with_its_reason(tmp_path: Path) -> None:
    result = run_tiny(tmp_path, ci="true")
    assert result.returncode == 1, result.stdout
    out = result.stdout
    assert "1 passed" in out and "skipped" not in out.splitlines()[-1]
    for reason in (
        "no chromium on this laptop",
        "developer-only guard",
        "daemon needs root",
        "known breakage",
    ):
        assert reason in out, reason
    assert "FAILED" in out and "test_browser_skips" in out and "test_fixture_skip" in out
    assert "real components: 1 tests ran against real daemons (nodes 1), 2 skipped" in out


def test_under_ci_a_module_skipped_at_import_is_an_error(tmp_path: Path) -> None:
    assert "1 skipped" in run_tiny(tmp_path, ci=None, suite=MISSING_IMPORT).stdout
    result = run_tiny(tmp_path, ci="true", suite=MISSING_IMPORT)
    assert result.returncode != 0
    assert "skipped under CI=true" in result.stdout and "ums_no_such_module" in result.stdout


def test_ci_other_than_true_keeps_skips(tmp_path: Path) -> None:
    result = run_tiny(tmp_path, ci="false")
    assert result.returncode == 0, result.stdout
