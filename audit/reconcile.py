"""The audit chain's reconciler: link records a dead session committed but never chained.

Registered as ``audit.chain`` (beat runs it every ``UMS_RECONCILE_INTERVAL`` s, the
embedded runner of ``make run`` likewise). Appends chain their own records right after
their commit (:mod:`audit.chainer`); this pass is the safety net for a process killed
between its commit and that step. With nothing pending it is one indexed count that finds
nothing; if another session is chaining it leaves the work to it.
"""

from __future__ import annotations

from typing import Any

from ums import reconcile

from .chainer import chain_committed, pending


@reconcile.register("audit.chain")
def chain() -> dict[str, Any]:
    if not pending():  # the quiet pass: one count on the partial index of unchained records
        return {"linked": 0}
    return {"linked": chain_committed()}
