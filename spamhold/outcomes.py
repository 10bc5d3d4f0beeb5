"""What a release or delete request answers: per message, exactly one of these.

``pending``: claimed by this request; the node has not confirmed yet (the message is
still ``ONHOLD`` with ``outcome`` set; its job applies it and the reconciler re-drives it).
``already``: someone else asked first or it was handled (or it left the queue); says who
and when, and ``pending`` when that other request is not confirmed yet.
``failed``: nothing can be asked (its node no longer exists).
``not_found``: no such message in the caller's scope (a single id answers 404).
``done``/``warnings`` are filled by whoever waits for the outcome (a job's result).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class OutcomeReport:
    pending: list[int] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
    # {"id", "status", "outcome", "pending", "handledBy" (name), "handledAt" (ISO or None)}
    already: list[dict[str, Any]] = field(default_factory=list)
    # {"id", "error"}
    failed: list[dict[str, Any]] = field(default_factory=list)
    not_found: list[int] = field(default_factory=list)
    # Done, but a follow-up did not happen (e.g. the sender could not be allow-listed):
    # {"id", "warning"}.
    warnings: list[dict[str, Any]] = field(default_factory=list)
    # The request written for the pending messages, and its job.
    intent: int | None = None
    job: int | None = None

    def counts(self) -> dict[str, int]:
        return {
            "pending": len(self.pending),
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
