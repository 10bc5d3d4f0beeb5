"""Real OpenPGP keys made in a test with GnuPG (no fixed key material in the repository).

A signing key lives in its own short temporary GNUPGHOME (gpg-agent's socket path must
stay under the 108-byte limit); :meth:`SigningKey.sign` writes a detached ASCII
signature, as a SpamAssassin channel mirror publishes next to each archive.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class SigningKey:
    home: str
    fingerprint: str
    public: str  # ASCII-armoured

    def gpg(self, *args: str, input: bytes | None = None) -> bytes:
        proc = subprocess.run(
            ["gpg", "--homedir", self.home, "--batch", "--no-tty", *args],
            input=input,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        return proc.stdout

    def sign(self, path: Path) -> Path:
        out = Path(f"{path}.asc")
        out.unlink(missing_ok=True)
        self.gpg(
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--armor",
            "--local-user",
            self.fingerprint,
            "--output",
            str(out),
            "--detach-sign",
            str(path),
        )
        return out


@contextlib.contextmanager
def signing_key(name: str) -> Iterator[SigningKey]:
    home = tempfile.mkdtemp(prefix="umsg", dir="/tmp")
    try:
        key = SigningKey(home, "", "")
        key.gpg(
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            f"{name} <{name.lower().replace(' ', '-')}@rules.ums.test>",
            "ed25519",
            "sign",
            "never",
        )
        rows = key.gpg("--with-colons", "--list-keys").decode().splitlines()
        key.fingerprint = next(r.split(":")[9] for r in rows if r.startswith("fpr:"))
        key.public = key.gpg("--armor", "--export", key.fingerprint).decode()
        yield key
    finally:
        subprocess.run(
            ["gpgconf", "--homedir", home, "--kill", "all"], check=False, capture_output=True
        )
        shutil.rmtree(home, ignore_errors=True)
