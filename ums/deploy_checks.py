"""Checks `manage.py check --deploy` adds to Django's: settings only the test suite may use."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def tasks_not_in_requests(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    # Issue 18: no request may wait on a node. Eager mode runs each job inside the request
    # that enqueued it, so a silent node would hold a web worker for minutes.
    if settings.UMS_TASK_MODE != "eager":
        return []
    return [
        Warning(
            "UMS_TASKS_IN_PROCESS=true runs jobs inside the web request, which then waits "
            "for the nodes.",
            hint="Leave it empty in production: the embedded task runner or Celery workers "
            "run jobs after the response.",
            id="ums.W001",
        )
    ]
