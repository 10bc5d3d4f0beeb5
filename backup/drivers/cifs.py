"""CIFS target: an SMB share written with smbprotocol, a user-space SMB3 client.

No kernel CIFS module and no mount are needed on the controller (or on a node without
cifs-utils). Every driver keeps its own connection cache, so two targets on one server
with different credentials never share a session.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .base import Target, TargetError, check_name

_READ = 1024 * 1024


def _describe(exc: Exception, server: str, share: str) -> str:
    name = type(exc).__name__
    text = str(exc)
    if name == "LogonFailure" or "STATUS_LOGON_FAILURE" in text:
        return f"the SMB server {server} refused the user name or password"
    if name == "BadNetworkName" or "STATUS_BAD_NETWORK_NAME" in text:
        return f"the SMB server {server} has no share called {share!r}"
    if name == "AccessDenied" or "STATUS_ACCESS_DENIED" in text:
        return f"the SMB server {server} denied access to share {share!r}"
    if "Failed to connect" in text or isinstance(exc, (ConnectionError, TimeoutError)):
        return f"cannot connect to the SMB server {server}: {text}"
    return f"SMB error on {server}: {text or name}"


class CifsTarget(Target):
    def __init__(
        self,
        *,
        server: str,
        port: int,
        share: str,
        path: str,
        username: str,
        password: str,
        domain: str = "",
        timeout: float = 30,
    ) -> None:
        self.server = server
        self.port = port
        self.share = share
        self.base = "\\".join(p for p in path.strip("/").split("/") if p)
        self.username = f"{domain}\\{username}" if domain else username
        self.password = password
        self.timeout = timeout
        self._cache: dict[str, Any] = {}

    def _kwargs(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "connection_cache": self._cache,
            "connection_timeout": self.timeout,
        }

    def _unc(self, name: str = "") -> str:
        parts = [f"\\\\{self.server}\\{self.share}"]
        if self.base:
            parts.append(self.base)
        if name:
            parts.append(name.replace("/", "\\"))
        return "\\".join(parts)

    def _fail(self, exc: Exception) -> TargetError:
        return TargetError(_describe(exc, self.server, self.share))

    def _makedirs(self, folder: str) -> None:
        """Create ``folder`` and its parents below the share root.

        Not ``smbclient.makedirs``: on a share that does not exist it climbs to the share
        root and retries it forever. Here the share root is checked first, so a missing
        share is one clear error.
        """
        import errno

        import smbclient

        root = f"\\\\{self.server}\\{self.share}"
        try:
            smbclient.stat(root, **self._kwargs())
        except OSError as exc:
            # Samba answers STATUS_NOT_FOUND (or BAD_NETWORK_NAME) for an unknown share.
            if exc.errno == errno.ENOENT or "0xc00000cc" in str(exc):
                raise TargetError(
                    f"the SMB server {self.server} has no share called {self.share!r}"
                ) from exc
            raise
        current = root
        for part in folder[len(root) :].strip("\\").split("\\"):
            if not part:
                continue
            current = f"{current}\\{part}"
            try:
                smbclient.mkdir(current, **self._kwargs())
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise

    def put(self, name: str, chunks: Iterable[bytes]) -> int:
        import smbclient

        check_name(name)
        final = self._unc(name)
        folder, _sep, leaf = final.rpartition("\\")
        partial = f"{folder}\\.{leaf}.partial"
        written = 0
        try:
            self._makedirs(folder)
            with smbclient.open_file(partial, mode="wb", **self._kwargs()) as handle:
                for piece in chunks:
                    handle.write(piece)
                    written += len(piece)
            smbclient.replace(partial, final, **self._kwargs())
        except TargetError:
            raise
        except Exception as exc:
            raise self._fail(exc) from exc
        return written

    def get(self, name: str) -> Iterator[bytes]:
        import smbclient

        check_name(name)
        try:
            handle = smbclient.open_file(self._unc(name), mode="rb", **self._kwargs())
        except Exception as exc:
            if "STATUS_OBJECT_NAME_NOT_FOUND" in str(exc) or "No such file" in str(exc):
                raise TargetError(f"{name} does not exist on the target") from exc
            raise self._fail(exc) from exc
        with handle:
            while piece := handle.read(_READ):
                yield piece

    def list(self, prefix: str = "") -> list[str]:
        import smbclient

        if prefix:
            check_name(prefix)
        top = self._unc(prefix)
        root = self._unc()
        names: list[str] = []
        try:
            if not smbclient.path.isdir(top, **self._kwargs()):
                return []
            for folder, _dirs, files in smbclient.walk(top, **self._kwargs()):
                relative = folder[len(root) :].strip("\\").replace("\\", "/")
                for leaf in files:
                    if not leaf.startswith("."):
                        names.append(f"{relative}/{leaf}" if relative else leaf)
        except Exception as exc:
            raise self._fail(exc) from exc
        return sorted(names)

    def delete(self, name: str) -> None:
        import smbclient

        check_name(name)
        try:
            smbclient.remove(self._unc(name), **self._kwargs())
        except Exception as exc:
            if "STATUS_OBJECT_NAME_NOT_FOUND" in str(exc) or "No such file" in str(exc):
                return
            raise self._fail(exc) from exc

    def close(self) -> None:
        import smbclient

        smbclient.reset_connection_cache(connection_cache=self._cache)
