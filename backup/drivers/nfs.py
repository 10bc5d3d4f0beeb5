"""NFS target: a directory where an NFS export is mounted (any local directory works).

Objects are files below the directory; a put writes a temporary file beside the final
one and renames it, so a reader never sees half an object.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from .base import Target, TargetError, check_name

_READ = 1024 * 1024


class NfsTarget(Target):
    def __init__(self, path: str) -> None:
        self.root = Path(path)

    def _root(self) -> Path:
        if not self.root.is_dir():
            raise TargetError(f"{self.root} is not a directory here (is the NFS export mounted?)")
        return self.root

    def _path(self, name: str) -> Path:
        return self._root() / check_name(name)

    def put(self, name: str, chunks: Iterable[bytes]) -> int:
        path = self._path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
            written = 0
            with open(tmp, "wb") as handle:
                for piece in chunks:
                    handle.write(piece)
                    written += len(piece)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except PermissionError as exc:
            raise TargetError(f"no permission to write in {self.root}: {exc.strerror}") from exc
        except OSError as exc:
            raise TargetError(f"writing to {self.root} failed: {exc.strerror or exc}") from exc
        return written

    def get(self, name: str) -> Iterator[bytes]:
        path = self._path(name)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError as exc:
            raise TargetError(f"{name} does not exist on the target") from exc
        except OSError as exc:
            raise TargetError(f"reading {name} failed: {exc.strerror or exc}") from exc
        with handle:
            while piece := handle.read(_READ):
                yield piece

    def list(self, prefix: str = "") -> list[str]:
        base = self._root() / check_name(prefix) if prefix else self._root()
        if not base.is_dir():
            return []
        root = self._root()
        return sorted(
            str(p.relative_to(root))
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def delete(self, name: str) -> None:
        try:
            self._path(name).unlink(missing_ok=True)
        except OSError as exc:
            raise TargetError(f"deleting {name} failed: {exc.strerror or exc}") from exc
