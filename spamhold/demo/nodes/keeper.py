"""The detached process that owns the demo's harness cluster: ``python -m`` this module.

``demo_nodes up`` starts it in its own session (Ctrl-C on ``make run`` does not reach
it), waits for ``state.json`` and returns; the nodes run as long as this process does.
``demo_nodes down`` sends SIGTERM: the harness then stops every process of the nodes and
deletes their namespaces, links and bridge, exactly as at the end of a test.

It prepares each node as the suite's tests do: the converge/filter private paths plus
``/etc/ssh`` (so ``bootstrapcore.sh`` reports the node's own host key), stand-ins for
``reboot`` and ``service``, and a local ClamAV database holding only the EICAR signature
(nothing is downloaded).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import traceback
from pathlib import Path

import django

NODE_COUNT = 2  # node1: SMTP, node2: IMAP
# Private paths kept when the nodes start again: identity (host key, the controller key
# bootstrapcore.sh installed) and mail. Everything else starts from the package defaults,
# as after a reinstall, so the first converge installs and starts every daemon again (a
# converge that finds its files unchanged does not start a daemon that is not running).
KEPT_ON_RESTART = ("/root", "/etc/ssh", "/var/mail")


def _reset_services(cluster_dir: Path, private_paths: tuple[str, ...]) -> None:
    for node_root in sorted(cluster_dir.glob("node*/root")):
        for path in private_paths:
            if path not in KEPT_ON_RESTART:
                shutil.rmtree(node_root / path.lstrip("/"), ignore_errors=True)


def start(workdir: Path):  # type: ignore[no-untyped-def]
    """Start the cluster and prepare its nodes; the running cluster."""
    from deploy.connector.keys import public_key_openssh
    from tests.converge.test_filtering import FILTER_PRIVATE_PATHS, local_clamav_database
    from tests.harness.sshnodes import HarnessError, NodeCluster
    from tests.servers.nodes import install_stand_ins, new_pkey
    from tests.servers.test_bootstrap import _give_node_its_own_host_key

    # The harness's own key file trusts a key nobody holds: the controller gets in only
    # through what bootstrapcore.sh writes into root's authorized_keys, as on a real node.
    private_paths = (*FILTER_PRIVATE_PATHS, "/etc/ssh")
    _reset_services(workdir / "cluster", private_paths)
    cluster = NodeCluster(
        workdir / "cluster",
        NODE_COUNT,
        public_key_openssh(new_pkey(), "harness-only"),
        private_paths=private_paths,
    )
    cluster.start()
    try:
        if cluster.mode != "netns" or not cluster.isolated:
            raise HarnessError(
                "demo nodes need network and mount namespaces (ip netns, unshare); "
                "this machine offers neither"
            )
        for tnode in cluster.nodes:
            install_stand_ins(tnode)
            _give_node_its_own_host_key(tnode)
        local_clamav_database(cluster.nodes[0])
    except BaseException:
        cluster.stop()
        raise
    return cluster


def describe(cluster) -> dict:  # type: ignore[no-untyped-def]
    return {
        "keeper_pid": os.getpid(),
        "slot": cluster.slot,
        "bridge": cluster.bridge,
        "bridge_address": cluster.bridge_address,
        "nodes": [
            {
                "name": t.name,
                "hostname": t.hostname,
                "address": t.address,
                "port": t.port,
                "host_key": t.host_key,
                "netns": t.netns,
                "sshd_pid": t.pid,
            }
            for t in cluster.nodes
        ],
    }


def main(workdir: Path) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ums.settings")
    django.setup()
    from spamhold.demo.nodes import state

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_args: stop.set())
    try:
        cluster = start(workdir)
    except Exception:
        state.error_path(workdir).write_text(traceback.format_exc())
        return 1
    try:
        state.write(describe(cluster), workdir)
        print(f"demo nodes up in slot {cluster.slot}", flush=True)
        while not stop.wait(5):
            pass
    finally:
        print("stopping the demo nodes", flush=True)
        cluster.stop()
        state.forget(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
