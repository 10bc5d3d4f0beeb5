"""An office test node running the Collabora Online STAND-IN (tests/standins/collabora).

Collabora Online cannot be installed on the test machines (not in Debian; its packages
come from Collabora's own repository), so the node's ``service coolwsd start|stop|
restart`` (the command converge uses on a node without systemd) runs the stand-in, which
reads the coolwsd.xml converge rendered and serves coolwsd's HTTP interface on 9980 in the
node's network namespace, converting to PDF with Debian's real LibreOffice.
"""

from __future__ import annotations

import stat
from pathlib import Path

from tests.harness.sshnodes import TestNode
from tests.servers.nodes import CALLS_LOG

STANDIN = Path(__file__).resolve().parents[1] / "standins" / "collabora" / "standin.py"
STATE_DIR = "/var/lib/coolwsd-standin"
PRIVATE_PATHS = ("/etc/coolwsd", STATE_DIR)
PYTHON = "/usr/bin/python3"

# The node's `service`: coolwsd is the stand-in; anything else is recorded as before.
SERVICE = f"""#!/bin/sh
if [ "$1" = coolwsd ]; then exec {PYTHON} {STANDIN} service "$2"; fi
echo "$(basename "$0") $*" >> {CALLS_LOG}
echo "stand-in $(basename "$0") ran: $*"
"""


def install(tnode: TestNode) -> None:
    path = tnode.path("/usr/local/sbin/service")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SERVICE)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
