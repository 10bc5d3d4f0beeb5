"""Flash messages that announce a job (the message links to the job's page), and the
standing notices apps show on every page.

Views call :func:`announce_job`; the message carries the job id in its extra tags and the
base template adds an "Open the job" link. Messages queued the older way ("… started as job
N …" with one of the msgids in ``JOB_ANNOUNCEMENTS``) are recognised by their text, in the
language they were written in, so they link too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.http import HttpRequest
from django.utils.translation import gettext

logger = logging.getLogger(__name__)
JOB_TAG = re.compile(r"(?:^|\s)job:(\d{1,18})(?:\s|$)")
# msgids (with a %(job)d placeholder) that apps use to say a job started.
JOB_ANNOUNCEMENTS = ("Import started as job %(job)d; it applies all rows or none.",)


def announce_job(request: HttpRequest, job: Any, text: str, level: int = messages.SUCCESS) -> None:
    """Queue ``text`` as a flash message that links to ``job``."""
    messages.add_message(request, level, text, extra_tags=f"job:{job.pk}")


def _pattern(msgid: str) -> re.Pattern[str]:
    translated = gettext(msgid)
    head, _sep, tail = translated.partition("%(job)d")
    return re.compile(re.escape(head) + r"(\d{1,18})" + re.escape(tail))


def job_id_of(message: Any) -> int | None:
    """The id of the job a flash message announces, if it announces one."""
    found = JOB_TAG.search(getattr(message, "extra_tags", "") or "")
    if found:
        return int(found.group(1))
    text = str(getattr(message, "message", message))
    for msgid in JOB_ANNOUNCEMENTS:
        match = _pattern(msgid).search(text)
        if match:
            return int(match.group(1))
    return None


# ---------------------------------------------------------------- standing notices
# Banners every portal page shows above its content while a condition holds (a licence
# about to expire, ...). Apps register a provider at start-up (``ums`` imports no app);
# a provider answers quickly and returns nothing for users it does not concern.


@dataclass(frozen=True)
class Notice:
    level: str  # "info", "warning" or "error" (the message styles of the base template)
    text: str
    url: str = ""
    link_text: str = ""


NoticeProvider = Callable[[Any], list[Notice]]
_providers: list[NoticeProvider] = []


def register_notice_provider(provider: NoticeProvider) -> None:
    if provider not in _providers:
        _providers.append(provider)


def notices_for(user: Any) -> list[Notice]:
    """The standing notices ``user`` should see on every page."""
    found: list[Notice] = []
    for provider in _providers:
        try:
            found.extend(provider(user))
        except Exception:  # a banner must never break the page (the 500 page included)
            logger.exception("notice provider %s failed", provider)
    return found
