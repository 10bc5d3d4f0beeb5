"""The enrolment QR code, drawn by the portal itself (segno, SVG): no outside service."""

from __future__ import annotations

import segno


def svg_data_uri(text: str) -> str:
    """An ``<img src>``-ready data URI (the CSP allows ``data:`` images, nothing inline)."""
    code = segno.make(text, error="m", micro=False)
    return code.svg_data_uri(scale=5, border=2, dark="#111827", light="#ffffff")
