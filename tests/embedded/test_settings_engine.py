"""Settings: PostgreSQL only (the embedded server by default), no placeholder secret, and
the task mode that follows from the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOOD_KEY = "x7Pq2Lm9Rt4Vb8Nc1Zd6Gh3Jk5Wf0Ys-Ea_Qo" * 2
PRINT = (
    "import json, django; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'db': s.DATABASES['default'], 'mode': s.UMS_TASK_MODE, "
    "'eager': s.CELERY_TASK_ALWAYS_EAGER, 'beat': s.CELERY_BEAT_SCHEDULE_FILENAME}))"
)


def settings_in(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("UMS_", "DJANGO_")) and k not in {"DATABASE_URL", "CELERY_BROKER_URL"}
    }
    return subprocess.run(
        [sys.executable, "-c", PRINT],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "ums.settings", "UMS_VAR_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_database_url_the_embedded_server_is_the_database(tmp_path: Path) -> None:
    result = settings_in({}, tmp_path)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["db"]["ENGINE"] == "django.db.backends.postgresql"
    assert found["db"]["HOST"].startswith((str(tmp_path), "/tmp/ums-pg-"))
    assert found["mode"] == "embedded" and found["eager"] is True
    assert found["beat"] == str(tmp_path / "celerybeat-schedule")


def test_a_broker_means_celery_and_in_process_means_eager(tmp_path: Path) -> None:
    broker = {"CELERY_BROKER_URL": "redis://127.0.0.1:6379/9"}
    found = json.loads(settings_in(broker, tmp_path).stdout)
    assert (found["mode"], found["eager"]) == ("celery", False)
    found = json.loads(settings_in({**broker, "UMS_TASKS_IN_PROCESS": "true"}, tmp_path).stdout)
    assert (found["mode"], found["eager"]) == ("eager", True)


def test_another_engine_is_refused(tmp_path: Path) -> None:
    result = settings_in({"DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite3"}, tmp_path)
    assert result.returncode != 0
    assert "PostgreSQL is the only engine" in result.stderr


def test_the_database_password_can_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "db_password"
    secret.write_text("s3cret-from-file\n")
    env = {
        "DATABASE_URL": "postgres://ums@db.example:5432/ums",
        "UMS_DATABASE_PASSWORD_FILE": str(secret),
    }
    found = json.loads(settings_in(env, tmp_path).stdout)
    assert found["db"]["PASSWORD"] == "s3cret-from-file"


def test_placeholder_or_short_secret_keys_are_refused_unless_debug(tmp_path: Path) -> None:
    for key in ("change-me-to-50-random-characters", "short-key"):
        result = settings_in({"DJANGO_SECRET_KEY": key}, tmp_path)
        assert result.returncode != 0
        assert "DJANGO_SECRET_KEY is a placeholder" in result.stderr
    debug = settings_in({"DJANGO_SECRET_KEY": "short-key", "UMS_DEBUG": "true"}, tmp_path)
    assert debug.returncode == 0, debug.stderr
    assert settings_in({"DJANGO_SECRET_KEY": GOOD_KEY}, tmp_path).returncode == 0
    # Empty (as in .env.example): generated under UMS_VAR_DIR.
    assert settings_in({"DJANGO_SECRET_KEY": ""}, tmp_path).returncode == 0
    assert len((tmp_path / "secret_key").read_text().strip()) >= 40
