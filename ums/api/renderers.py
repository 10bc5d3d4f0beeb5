"""camelCase JSON with each distinct key converted once.

``djangorestframework_camel_case`` runs a regular expression on every key of every row; on
a 50-row page that costs more than the database query. This renderer gives the same output
(the library's own conversion, cached per key) and leaves the ``JSON_CAMEL_CASE``
``ignore_fields`` (audit evidence, job payloads) untouched.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from django.conf import settings
from django.utils.encoding import force_str
from django.utils.functional import Promise
from djangorestframework_camel_case.render import CamelCaseJSONRenderer
from djangorestframework_camel_case.util import camelize_re, underscore_to_camel


@lru_cache(maxsize=8192)
def camel(key: str) -> str:
    return camelize_re.sub(underscore_to_camel, key) if "_" in key else key


@lru_cache(maxsize=1)
def _ignored() -> frozenset[str]:
    options = settings.JSON_CAMEL_CASE.get("JSON_UNDERSCOREIZE", {})
    return frozenset(options.get("ignore_fields") or ())


def camelize(data: Any, ignored: frozenset[str] | None = None) -> Any:
    ignored = _ignored() if ignored is None else ignored
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            if isinstance(key, Promise):
                key = force_str(key)
            if isinstance(key, str):
                out[camel(key)] = value if key in ignored else camelize(value, ignored)
            else:
                out[key] = camelize(value, ignored)
        return out
    if isinstance(data, list | tuple):
        return [camelize(item, ignored) for item in data]
    if isinstance(data, Promise):
        return force_str(data)
    return data


class FastCamelCaseJSONRenderer(CamelCaseJSONRenderer):
    def render(self, data: Any, *args: Any, **kwargs: Any) -> bytes:
        # Skip the library's camelize; its parent class renders the JSON.
        return super(CamelCaseJSONRenderer, self).render(camelize(data), *args, **kwargs)
