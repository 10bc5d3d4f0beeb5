"""The Russian and Mongolian catalogs are complete and current.

Complete: every entry translated, nothing fuzzy, plural forms right for the language, and
the compiled ``.mo`` next to each ``.po``. Current: running ``makemessages`` over a copy of
the source finds no message the catalogs lack, so a string added without a translation
fails here rather than showing up in English.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import polib
import pytest
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
LANGUAGES = {"ru": 3, "mn": 2}  # language: number of plural forms
SOURCE_DIRS = [
    "templates",
    "tenants",
    "audit",
    "ums",
    "mail",
    "servers",
    "spamhold",
    "deploy",
    "backup",
    "licensing",
    "usage",
    "cloudfiles",
    "office",
    "chat",
    "replication",
    "clouddb",
]


def catalog(language: str, root: Path = ROOT) -> polib.POFile:
    return polib.pofile(str(root / "locale" / language / "LC_MESSAGES" / "django.po"))


@pytest.mark.parametrize(("language", "plurals"), LANGUAGES.items())
def test_catalog_is_complete(language: str, plurals: int) -> None:
    po = catalog(language)
    assert f"nplurals={plurals};" in po.metadata["Plural-Forms"].replace(" ", "")
    live = [e for e in po if not e.obsolete]
    assert len(live) > 100
    untranslated = [e.msgid for e in po.untranslated_entries()]
    fuzzy = [e.msgid for e in po.fuzzy_entries()]
    assert not untranslated, untranslated
    assert not fuzzy, fuzzy
    for entry in live:
        if entry.msgid_plural:
            forms = [entry.msgstr_plural.get(i, "") for i in range(plurals)]
            assert all(forms), entry.msgid
            assert len(entry.msgstr_plural) == plurals, entry.msgid


@pytest.mark.parametrize("language", LANGUAGES)
def test_catalog_is_compiled(language: str) -> None:
    po_path = ROOT / "locale" / language / "LC_MESSAGES" / "django.po"
    mo_path = po_path.with_suffix(".mo")
    assert mo_path.exists()
    # Keyed by context too: "From" (a sender) and "From" (a zone) are different messages.
    compiled = {
        (e.msgctxt, e.msgid): e.msgstr for e in polib.mofile(str(mo_path)) if not e.msgid_plural
    }
    source = {
        (e.msgctxt, e.msgid): e.msgstr
        for e in catalog(language)
        if not e.msgid_plural and not e.obsolete
    }
    assert compiled == source, "the .mo is older than the .po: run compilemessages"


@pytest.mark.parametrize("language", LANGUAGES)
def test_translations_keep_their_placeholders(language: str) -> None:
    result = subprocess.run(
        [
            "msgfmt",
            "--check-format",
            "-o",
            "/dev/null",
            str(ROOT / "locale" / language / "LC_MESSAGES" / "django.po"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_makemessages_finds_nothing_new(tmp_path: Path) -> None:
    for name in SOURCE_DIRS:
        source = ROOT / name
        if source.exists():
            shutil.copytree(
                source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.mo")
            )
    shutil.copytree(ROOT / "locale", tmp_path / "locale")
    shutil.copy2(ROOT / "manage.py", tmp_path / "manage.py")
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "makemessages",
            "-l",
            "ru",
            "-l",
            "mn",
            "--no-location",
            "--ignore=.venv",
            "--ignore=var",
            "--ignore=tests",
            "--ignore=benchmarks",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env=_environment(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    for language in LANGUAGES:
        before = {(e.msgctxt, e.msgid) for e in catalog(language) if not e.obsolete}
        after = {(e.msgctxt, e.msgid) for e in catalog(language, tmp_path) if not e.obsolete}
        missing = sorted(after - before, key=str)
        assert not missing, f"{language}: untranslated new messages {missing}"


def _environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "ums.settings",
            "PYTHONPATH": str(copy),
            "UMS_VAR_DIR": str(copy / "var"),
        }
    )
    # makemessages touches no database: the copy runs on the embedded default.
    env.pop("DATABASE_URL", None)
    return env
