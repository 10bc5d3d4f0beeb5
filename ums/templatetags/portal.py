"""Small template helpers for the portal: navigation state, JSON display, form widgets.

Nothing here marks user data safe: values are returned as plain strings and the template
engine escapes them.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms, template
from django.conf import settings
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.urls import NoReverseMatch, reverse

from ums.portal import jobtext, notices

register = template.Library()

# Pages that belong to a navigation section although they live under another prefix.
_SECTION_ALIASES = {"/customers/": ("/customers/", "/administrators/")}


@register.simple_tag(takes_context=True)
def nav_active(context: template.Context, url_name: str | None) -> bool:
    """True when the current page belongs to the navigation entry ``url_name``."""
    request: HttpRequest | None = context.get("request")
    if request is None or not url_name:
        return False
    try:
        prefix = reverse(url_name)
    except NoReverseMatch:
        return False
    if prefix == "/":
        # The home page is a prefix of every page: only the page itself is "home".
        return request.path == "/"
    prefixes = _SECTION_ALIASES.get(prefix, (prefix,))
    return any(request.path.startswith(p) for p in prefixes)


@register.filter
def pretty_json(value: Any) -> str:
    """Indented JSON for the audit before/after values (escaped by the template engine)."""
    if value in (None, "", {}, []):
        return ""
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str)


@register.filter
def is_checkbox(field: forms.BoundField) -> bool:
    return isinstance(field.field.widget, forms.CheckboxInput)


@register.filter
def is_multi_checkbox(field: forms.BoundField) -> bool:
    return isinstance(field.field.widget, forms.CheckboxSelectMultiple)


# Django's locale table has no native name for Mongolian; the switch shows each language in
# its own script.
_NATIVE_NAMES = {"en": "English", "ru": "Русский", "mn": "Монгол"}


@register.simple_tag
def portal_languages() -> list[dict[str, str]]:
    """The configured languages as (code, native name), for the language switch."""
    return [
        {"code": code, "name": _NATIVE_NAMES.get(code, str(name))}
        for code, name in settings.LANGUAGES
    ]


@register.filter
def job_message(job: Any) -> str:
    """The human message of a failed job: never a Python traceback (see ums.portal.jobtext)."""
    return jobtext.error_summary(getattr(job, "error", "") or "")


@register.filter
def job_title(job: Any) -> str:
    """The job's title in the reader's language."""
    return jobtext.title(job)


@register.filter
def job_log(job: Any) -> str:
    """The job's log, each line in the reader's language where it can be."""
    return jobtext.translate_log(getattr(job, "log", "") or "")


@register.filter
def mb_size(megabytes: int | None) -> str:
    """A size given in MB, as "1.5 GB" (quota figures are kept in MB)."""
    return filesizeformat((megabytes or 0) * 1024 * 1024)


@register.simple_tag
def message_job_id(message: Any) -> int | None:
    """The job a flash message announces (its page is linked next to the message)."""
    return notices.job_id_of(message)
