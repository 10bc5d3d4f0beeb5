"""Fill the Russian and Mongolian catalogs from ``locale/pending/*.json`` after makemessages.

Engineers working in parallel do not edit the ``.po`` files (``makemessages`` rewrites them
whole, so every branch would conflict); each writes the translations of the strings it
adds to ``locale/pending/<name>.json``::

    [{"msgid": "Restore", "msgctxt": null, "ru": "Восстановить", "mn": "Сэргээх"},
     {"msgid": "%(n)d job", "msgid_plural": "%(n)d jobs",
      "ru": ["...", "...", "..."], "mn": ["...", "..."]}]

Run ``make messages`` first (it adds the new msgids), then this script, then
``compilemessages``. Entries already translated in a catalog keep their translation unless
the pending file says otherwise; the pending files are removed with ``--consume``.
Prints what is still untranslated, so nothing is silently left in English.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polib

ROOT = Path(__file__).resolve().parent.parent
LANGUAGES = ("ru", "mn")


def load_pending(folder: Path) -> dict[tuple[str | None, str], dict]:
    """Both shapes: the list above, or ``{msgid: {"ru": ..., "mn": ...}}`` with a context
    written as ``"<context>\\u0004<msgid>"`` (gettext's own separator)."""
    entries: dict[tuple[str | None, str], dict] = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data = [_from_mapping(key, value) for key, value in data.items()]
        for item in data:
            entries[(item.get("msgctxt") or None, item["msgid"])] = item
    return entries


def _from_mapping(key: str, value: dict) -> dict:
    context, sep, msgid = key.rpartition("\u0004")
    return {**value, "msgid": msgid, "msgctxt": context if sep else None}


def apply(language: str, pending: dict[tuple[str | None, str], dict]) -> list[str]:
    po_path = ROOT / "locale" / language / "LC_MESSAGES" / "django.po"
    po = polib.pofile(str(po_path))
    for entry in po:
        if entry.obsolete:
            continue
        item = pending.get((entry.msgctxt or None, entry.msgid))
        if item is None or language not in item:
            continue
        value = item[language]
        if entry.msgid_plural:
            forms = value if isinstance(value, list) else [value]
            entry.msgstr_plural = dict(enumerate(forms))
        else:
            entry.msgstr = value if isinstance(value, str) else value[0]
        if "fuzzy" in entry.flags:
            entry.flags.remove("fuzzy")
    po.save()
    return [
        entry.msgid
        for entry in po
        if not entry.obsolete and (not entry.translated() or "fuzzy" in entry.flags)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consume", action="store_true", help="remove the pending files")
    args = parser.parse_args()
    folder = ROOT / "locale" / "pending"
    pending = load_pending(folder)
    missing = {language: apply(language, pending) for language in LANGUAGES}
    for language, msgids in missing.items():
        for msgid in msgids:
            print(f"{language}: untranslated: {msgid!r}")
    if args.consume:
        for path in folder.glob("*.json"):
            path.unlink()
    return 1 if any(missing.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
