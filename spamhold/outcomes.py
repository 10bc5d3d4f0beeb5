"""What a release or delete answers: per message, exactly one of four outcomes.

``done``: this call moved the message (database claim won, node command succeeded).
``already``: someone else handled it first (or it left the queue); says who and when.
``failed``: the claim was won but the node command failed; the claim was rolled back, so
the message is on hold again and can be retried (``error`` says why).
``not_found``: no such message in the caller's scope (a single id answers 404).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class OutcomeReport:
    done: list[int] = field(default_factory=list)
    # {"id", "status", "outcome", "handledBy" (name), "handledAt" (ISO or None)}
    already: list[dict[str, Any]] = field(default_factory=list)
    # {"id", "error"}
    failed: list[dict[str, Any]] = field(default_factory=list)
    not_found: list[int] = field(default_factory=list)
    # Done, but a follow-up did not happen (e.g. the sender could not be allow-listed):
    # {"id", "warning"}.
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def merge(self, other: OutcomeReport) -> None:
        self.done += other.done
        self.already += other.already
        self.failed += other.failed
        self.not_found += other.not_found
        self.warnings += other.warnings

    def counts(self) -> dict[str, int]:
        return {
            "done": len(self.done),
            "already": len(self.already),
            "failed": len(self.failed),
            "notFound": len(self.not_found),
            "warnings": len(self.warnings),
        }

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["notFound"] = data.pop("not_found")
        return data
