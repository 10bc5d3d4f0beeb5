"""Standing notices: a failing provider is logged and skipped, never breaks the page."""

from __future__ import annotations

from typing import Any

from ums.portal import notices


def test_a_failing_provider_does_not_hide_the_others(monkeypatch: Any) -> None:
    def broken(user: Any) -> list[notices.Notice]:
        raise RuntimeError("database gone")

    def fine(user: Any) -> list[notices.Notice]:
        return [notices.Notice("info", "hello")]

    monkeypatch.setattr(notices, "_providers", [broken, fine])
    assert notices.notices_for(object()) == [notices.Notice("info", "hello")]
