"""What the demo nodes need on this machine, and the message when something is missing."""

from __future__ import annotations

import os
import shutil

from django.utils.translation import gettext as _

# Commands the harness, bootstrapcore.sh and the converged mail services run on the nodes
# (which share this machine's programs); installed by scripts/install-test-packages.sh.
COMMANDS = (
    "sshd",
    "ip",
    "unshare",
    "nsenter",
    "wget",
    "postfix",
    "couriertcpd",
    "authdaemond",
    "spamd",
    "clamd",
    "sigtool",
    "opendkim",
    "opendmarc",
    "python3",
)
_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def missing() -> list[str]:
    """What is missing: "root" and/or the commands not found."""
    problems = [] if os.geteuid() == 0 else ["root"]
    problems += [name for name in COMMANDS if shutil.which(name, path=_PATH) is None]
    return problems


def explain(problems: list[str]) -> str:
    commands = [p for p in problems if p != "root"]
    parts = []
    if "root" in problems:
        parts.append(_("Demo nodes need root (network namespaces, bind mounts, port 25)."))
    if commands:
        parts.append(
            _(
                "Demo nodes need the Debian packages of “make test” (as root: bash "
                "scripts/install-test-packages.sh); missing: %(commands)s."
            )
            % {"commands": ", ".join(commands)}
        )
    parts.append(_("Demo nodes skipped: the portal runs without them."))
    return " ".join(parts)
