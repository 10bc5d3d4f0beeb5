"""The target driver contract: put, get, list and delete named objects.

Drivers move bytes they are given; encryption happens above them (:mod:`backup.crypto`,
:func:`backup.drivers.put_encrypted`). Object names are relative slash-separated paths of
plain components (letters, digits, ``.``, ``_``, ``-``), checked here once so no driver
ever builds a key, a share path or a file path from anything else.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable, Iterator

_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


class TargetError(Exception):
    """A target refused or failed an operation; the message is for administrators."""


def check_name(name: str) -> str:
    """``name`` if it is a safe relative object name; :class:`TargetError` otherwise."""
    parts = name.split("/")
    if not name or len(name) > 512 or not all(_COMPONENT.match(p) for p in parts):
        raise TargetError(f"invalid object name {name!r}")
    return name


class Target(abc.ABC):
    """A place backups are written to."""

    @abc.abstractmethod
    def put(self, name: str, chunks: Iterable[bytes]) -> int:
        """Store the concatenated ``chunks`` as ``name`` (replacing it); bytes written."""

    @abc.abstractmethod
    def get(self, name: str) -> Iterator[bytes]:
        """The stored bytes of ``name``, as pieces."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Names under ``prefix`` (a folder, ``""`` for all), sorted."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Remove ``name``; removing what is not there is not an error."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections."""
