"""Has the demo (or anyone) already made this setting? The audit log says so.

Objects are seeded when absent; settings (policies, limits, retention, the two-factor
requirement) cannot be told apart from "changed back by an administrator" by looking at
the value, so a setting is seeded only if the audit log has no record of that setting for
that object: a second run, or a run after an administrator's change, leaves it alone.
"""

from __future__ import annotations

from typing import Any

from audit.models import AuditRecord


def recorded(action: str | tuple[str, ...], *, object_type: str, object_id: Any) -> bool:
    """Whether an audit record of ``action`` exists for the object."""
    actions = (action,) if isinstance(action, str) else action
    return AuditRecord.objects.filter(
        action__in=actions, object_type=object_type, object_id=str(object_id)
    ).exists()
