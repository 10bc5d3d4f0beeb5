"""Faults injected into real test nodes: a command that hangs, sshd killed.

* :class:`Gate`: a ``postfix`` (or another command: ``sievec``) in the node's
  ``/usr/local/sbin`` (first in root's PATH
  over SSH) that hangs while the gate is closed, then runs the real one: the converge
  then stops in the middle (Postfix's check of the staged tree), as with a node whose
  command blocks, and the test kills something at that moment. Nothing of the
  controller is replaced.
* :class:`ZfsGate`: the same for one ``zfs <verb> <first argument>`` (``unmount
  pool/mail``, ``set readonly=off``), every other zfs command passing.
* :func:`kill_sshd`: SIGKILL of the node's sshd and every session under it (the
  converge's connection drops), leaving the mail daemons running, as when sshd crashes;
  :func:`start_sshd` brings it back.
"""

from __future__ import annotations

import os
import signal
import stat
from contextlib import suppress

from tests.harness import sshnodes
from tests.harness.sshnodes import TestNode

GATE_DIR = "/usr/local/sbin"
WRAPPER = """#!/bin/sh
# Fault-test gate: hangs while the gate file exists, then runs the real {name}.
if [ -e {dir}/{name}.gate ]; then
  : > {dir}/{name}.waiting
  while [ -e {dir}/{name}.gate ]; do sleep 0.2; done
fi
exec {real} "$@"
"""


class Gate:
    def __init__(
        self, tnode: TestNode, name: str = "postfix", real: str = "/usr/sbin/postfix"
    ) -> None:
        self.tnode = tnode
        self.name = name
        wrapper = tnode.path(f"{GATE_DIR}/{name}")
        wrapper.write_text(WRAPPER.format(dir=GATE_DIR, name=name, real=real))
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        self.gate = tnode.path(f"{GATE_DIR}/{name}.gate")
        self.waiting_marker = tnode.path(f"{GATE_DIR}/{name}.waiting")

    def close(self) -> None:
        self.waiting_marker.unlink(missing_ok=True)
        self.gate.touch()

    def open(self) -> None:
        self.gate.unlink(missing_ok=True)

    def waiting(self) -> bool:
        """A converge is hanging in the gate."""
        return self.waiting_marker.exists()

    def remove(self) -> None:
        self.open()
        self.tnode.path(f"{GATE_DIR}/{self.name}").unlink(missing_ok=True)


def kill_sshd(tnode: TestNode) -> None:
    """SIGKILL sshd and its sessions (not the daemons they started)."""
    pid = tnode.pid
    assert pid is not None, f"{tnode.name}'s sshd is not running"
    for victim in (pid, *sshnodes._descendants([pid])):
        with suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    with suppress(Exception):
        tnode._process.wait(timeout=10)  # type: ignore[union-attr]
    assert not tnode.running


def start_sshd(tnode: TestNode) -> None:
    tnode.start()


# Hangs ``zfs <verb> <dataset>`` while the gate file names exactly that verb and dataset,
# then runs the real zfs; every other zfs command passes.
ZFS_WRAPPER = f"""#!/bin/sh
if [ -e {GATE_DIR}/zfs.gate ] && [ "$1 $2" = "$(cat {GATE_DIR}/zfs.gate)" ]; then
  : > {GATE_DIR}/zfs.waiting
  while [ -e {GATE_DIR}/zfs.gate ]; do sleep 0.2; done
fi
exec /usr/sbin/zfs "$@"
"""


class ZfsGate:
    """``zfs <verb> <dataset>`` on the node hangs while closed on that pair."""

    def __init__(self, tnode: TestNode) -> None:
        self.wrapper = tnode.path(f"{GATE_DIR}/zfs")
        self.wrapper.write_text(ZFS_WRAPPER)
        self.wrapper.chmod(self.wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        self.gate = tnode.path(f"{GATE_DIR}/zfs.gate")
        self.marker = tnode.path(f"{GATE_DIR}/zfs.waiting")

    def close(self, verb: str, dataset: str) -> None:
        self.marker.unlink(missing_ok=True)
        self.gate.write_text(f"{verb} {dataset}")

    def waiting(self) -> bool:
        return self.marker.exists()

    def open(self) -> None:
        self.gate.unlink(missing_ok=True)

    def remove(self) -> None:
        self.open()
        self.wrapper.unlink(missing_ok=True)
