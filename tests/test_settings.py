"""Settings: environment only, failing loudly, and deploy-clean in production form."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("UMS_", "DJANGO_"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def env_example() -> dict[str, str]:
    """The variables .env.example sets (commented-out ones stay unset)."""
    pairs = (line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines())
    return {k: v for k, *rest in pairs if rest and not k.startswith("#") for v in rest}


def test_check_deploy_is_clean_with_production_settings(tmp_path: Path) -> None:
    # .env.example as a deployment would fill it in: an https:// base URL and a real key.
    result = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env={
            **env_example(),
            "UMS_BASE_URL": "https://portal.example.org",
            "DJANGO_SECRET_KEY": "k" * 10 + "x7Pq2Lm9Rt4Vb8Nc1Zd6Gh3Jk5Wf0Ys-Ea_Qo" * 2,
            "UMS_VAR_DIR": str(tmp_path),
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Clean, not quiet: nothing is silenced to get there.
    assert "System check identified no issues (0 silenced)" in result.stdout, result.stdout


def test_check_deploy_refuses_jobs_inside_requests(tmp_path: Path) -> None:
    result = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env={
            **env_example(),
            "UMS_BASE_URL": "https://portal.example.org",
            "DJANGO_SECRET_KEY": "k" * 10 + "x7Pq2Lm9Rt4Vb8Nc1Zd6Gh3Jk5Wf0Ys-Ea_Qo" * 2,
            "UMS_VAR_DIR": str(tmp_path),
            "UMS_TASKS_IN_PROCESS": "true",
        },
    )
    assert result.returncode != 0
    assert "ums.W001" in result.stderr + result.stdout


def test_malformed_variable_fails_loudly(tmp_path: Path) -> None:
    result = run_manage("check", env={"UMS_DEBUG": "perhaps", "UMS_VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "UMS_DEBUG must be a boolean" in result.stderr


def test_env_example_lists_every_variable() -> None:
    import re

    names = set()
    for path in [ROOT / "ums" / "settings.py"]:
        pattern = r'env_(?:str|bool|int|list|json_object)\(\s*"([A-Z0-9_]+)"'
        names |= set(re.findall(pattern, path.read_text()))
    example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    missing = sorted(n for n in names if n not in example or n not in readme)
    assert not missing, f"variables missing from .env.example or README: {missing}"


def test_node_settings_are_checked_at_start(tmp_path: Path) -> None:
    env = {"UMS_VAR_DIR": str(tmp_path)}
    good = '{"mail_store_pool": "tank", "greylist_delay": 60, "content_filter": true}'
    assert run_manage("check", env={**env, "UMS_NODE_SETTINGS": good}).returncode == 0
    typo = run_manage("check", env={**env, "UMS_NODE_SETTINGS": '{"mail_roots": "/srv"}'})
    assert typo.returncode != 0 and "unknown option 'mail_roots'" in typo.stderr
    wrong = run_manage("check", env={**env, "UMS_NODE_SETTINGS": '{"greylist_delay": true}'})
    assert wrong.returncode != 0 and "greylist_delay must be a number" in wrong.stderr
    broken = run_manage("check", env={**env, "UMS_NODE_SETTINGS": "{mail_root: x}"})
    assert broken.returncode != 0 and "UMS_NODE_SETTINGS must be a JSON object" in broken.stderr


def test_every_periodic_task_expires_after_its_interval() -> None:
    """A pass that waited in the broker longer than its interval (a worker down) is
    superseded by the next one: it expires instead of running in a burst on restart."""
    from django.conf import settings

    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        expires = entry.get("options", {}).get("expires")
        assert expires is not None, f"beat entry {name} never expires"
        assert expires >= float(entry["schedule"]), name
