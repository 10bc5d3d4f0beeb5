"""CSV export that spreadsheet programs cannot be tricked into evaluating.

A cell starting with ``= + - @`` (or a tab/CR) is read as a formula by Excel and LibreOffice;
prefixing a single quote keeps it text (OWASP's recommendation for CSV injection).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = str(value)
    if text.startswith(_FORMULA_START):
        return "'" + text
    return text


def stream_rows(header: list[str], rows: Iterable[list[Any]]) -> Iterator[str]:
    """Yield CSV text chunk by chunk, for a StreamingHttpResponse."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    yield buffer.getvalue()
    for row in rows:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([neutralise(v) for v in row])
        yield buffer.getvalue()
