"""The hashed lock files (requirements/) agree with pyproject.toml and with each other.

Installs use them with `pip install --require-hashes` (Makefile, Dockerfile); a pin changed
in pyproject.toml without `make lock` would otherwise install the old version silently.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "requirements"
ENTRY = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s*\\\n\s+--hash=sha256:[0-9a-f]{64})*)", re.M
)


def locked(name: str) -> dict[str, str]:
    """Package -> version of one lock file; every entry must carry at least one hash."""
    text = (LOCKS / name).read_text()
    pins = {}
    for match in ENTRY.finditer(text):
        assert match.group(3), f"{name}: {match.group(1)} has no hash"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    lines = [line for line in text.splitlines() if re.match(r"^[A-Za-z0-9]", line)]
    assert len(lines) == len(pins), f"{name}: an entry is not 'name==version' with hashes"
    return pins


def declared(*extras: str) -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in extras:
        specs += project["optional-dependencies"][extra]
    pins = {}
    for spec in specs:
        req = Requirement(spec)
        (only,) = req.specifier
        assert only.operator == "==", f"pyproject.toml: pin {spec} exactly"
        pins[canonicalize_name(req.name)] = only.version
    return pins


def test_each_lock_holds_exactly_the_pyproject_pins() -> None:
    for name, extras in {
        "test.txt": ("test", "embedded", "ldap"),
        "dev.txt": ("test", "embedded"),
        "prod.txt": ("ldap",),
    }.items():
        pins = locked(name)
        wrong = {
            pkg: (version, pins.get(pkg))
            for pkg, version in declared(*extras).items()
            if pins.get(pkg) != version
        }
        assert not wrong, f"requirements/{name} is stale (run make lock): {wrong}"


def test_locks_agree_with_each_other() -> None:
    everything = locked("test.txt")
    for name in ("dev.txt", "prod.txt", "pip.txt"):
        pins = locked(name)
        differ = {p: (v, everything.get(p)) for p, v in pins.items() if everything.get(p) != v}
        assert not differ, f"requirements/{name} and test.txt disagree: {differ}"
    # make run needs no LDAP headers; the image carries no test tools.
    assert "python-ldap" not in locked("dev.txt")
    assert not {"pytest", "playwright", "ruff", "schemathesis"} & set(locked("prod.txt"))
