"""The mail app's reconciler: imported passwords still waiting for their hash.

Registered as ``mail.passwords`` (beat runs it every ``UMS_RECONCILE_INTERVAL`` s). The
import queues its activation job at commit; this pass queues it again when that job was
lost, gave up or failed (see :mod:`mail.activation`). With nothing pending it is one
index probe that finds nothing.
"""

from __future__ import annotations

from typing import Any

from ums import reconcile

from . import activation


@reconcile.register("mail.passwords")
def activate_passwords() -> dict[str, Any]:
    return activation.reconcile_pending()
