"""Job log lines that every reader sees in their own language.

A job runs in a worker, long before (and far from) whoever reads its log, so a line is
stored untranslated and rendered when it is read. A handler writes::

    reporter.say(gettext_noop("%(host)s: re-queued %(count)d message(s)"), host=h, count=n)

which stores ``i18n:{"m": <English msgid>, "p": {<params>}}`` (see :func:`log_entry`);
:func:`translate_log` renders each line in the active language: the msgid through the
catalogs, then the parameters substituted. Parameters are shown exactly as given, so node
or checker output embedded in a line is never translated. The ``gettext_noop`` marks the
msgid for makemessages; ``tests/jobs/test_job_log_i18n.py`` fails if a handler logs a
formatted string instead.

Code outside the portal (deploy, spamhold, mail) writes log lines, so this module has no
portal imports; :mod:`ums.portal.jobtext` re-exports it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.utils import translation
from django.utils.translation import gettext

# An optional "[HH:MM:SS] " stamp, then the line.
LOG_STAMP = re.compile(r"^(\[\d{2}:\d{2}:\d{2}\] )?(.*)$")
# A log line written as ``i18n:{"m": msgid, "p": {params}}`` is shown translated.
I18N_PREFIX = "i18n:"


def log_entry(msgid: str, /, **params: Any) -> str:
    """A job log line that each reader sees in their language.

    Stores the English ``msgid`` (``%(name)s`` placeholders) and its parameters as JSON;
    :func:`translate_log` renders it. Pass the msgid as ``gettext_noop("...")`` so
    makemessages collects it. Values that are not JSON (paths, datetimes) are kept as text.
    """
    return I18N_PREFIX + json.dumps({"m": msgid, "p": params}, ensure_ascii=False, default=str)


def _format(template: str, params: dict[str, Any]) -> str:
    return template % params if params else template


def render_line(text: str) -> str:
    """One log line (without its stamp) in the active language."""
    if not text.startswith(I18N_PREFIX):
        # A plain line is shown translated when it is a msgid the catalogs know (else as is).
        return gettext(text) if text else text
    try:
        data = json.loads(text[len(I18N_PREFIX) :])
        msgid = str(data["m"])
        params = data.get("p") or {}
        if not isinstance(params, dict):
            return text
    except (ValueError, KeyError, TypeError, AttributeError):
        return text
    # A translation with a broken placeholder still shows the English line, never an error.
    for template in (gettext(msgid), msgid):
        try:
            return _format(template, params)
        except (KeyError, TypeError, ValueError):
            continue
    return text


def translate_log(log: str, language: str | None = None) -> str:
    """The job log in the reader's language (or ``language``), line by line; timestamps are
    kept."""
    if not log:
        return ""
    if language is not None:
        with translation.override(language):
            return translate_log(log)
    lines = []
    for line in log.splitlines():
        match = LOG_STAMP.match(line)
        stamp, text = (match.group(1) or "", match.group(2)) if match else ("", line)
        lines.append(stamp + render_line(text))
    return "\n".join(lines) + ("\n" if log.endswith("\n") else "")
