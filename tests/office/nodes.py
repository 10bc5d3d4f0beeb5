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

#: What the node's ``service`` runs (a fault test puts a gate in front of it).
LAUNCHER = "/usr/local/sbin/coolwsd-service"
# coolwsd is the stand-in; anything else is recorded as the other test nodes' `service`.
SERVICE = f"""#!/bin/sh
if [ "$1" = coolwsd ]; then exec {PYTHON} {STANDIN} service "$2"; fi
echo "$(basename "$0") $*" >> {CALLS_LOG}
echo "stand-in $(basename "$0") ran: $*"
"""


def install(tnode: TestNode) -> None:
    for name, body in (
        (LAUNCHER, SERVICE),
        ("/usr/local/sbin/service", f'#!/bin/sh\nexec {LAUNCHER} "$@"\n'),
    ):
        path = tnode.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
