"""Real sshd test nodes for tests and benchmarks: start them, inspect them, tear them down.

This module owns the test-node machinery. Each node is a real OpenSSH server that the
controller code talks to exactly as it would to a production node:

* ``netns`` mode (default when the kernel allows it): every node gets its own network
  namespace with a veth pair on a private bridge (``umsbr<slot>``, 10.231.<slot>.0/24,
  bridge .1, nodes .2, .3, ...), so nodes have their own address and listen on port 22;
* ``loopback`` mode (``UMS_TEST_NODES=loopback``, or automatically when ``ip netns add``
  fails): nodes listen on 127.0.0.1 with distinct ports.

In both modes sshd runs under ``unshare --uts --mount`` (when unshare works) with its own
hostname and private bind mounts over ``/etc/postfix``, ``/etc/courier``... so code on
the controller can use the real default paths and each node still has its own files;
the private copies live under ``TestNode.root`` where tests can read them directly.
Root's home (/root) is private too, started from /etc/skel like a fresh install: the
host's own shell start-up files would otherwise run on every SSH command.

Concurrency and crashes: a cluster takes a *slot* (an flock in ``/run/ums-testnodes``)
that fixes its names and subnet. Two clusters (two pytest processes, or a session
cluster plus a per-test one) get different slots; whatever a crashed run left in a slot
(namespaces, links, sshd processes) is removed when the slot is next taken.

Requires root (namespaces, bind mounts, port 22). Only addresses inside our own
namespaces or on loopback are ever used.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

__all__ = [
    "DEFAULT_PRIVATE_PATHS",
    "HarnessError",
    "NodeCluster",
    "TestNode",
    "ensure_openssh_installed",
]

SSHD = "/usr/sbin/sshd"
STATE_DIR = Path("/run/ums-testnodes")
MAX_SLOTS = 16
MAX_NODES_PER_SLOT = 250  # .2 .. .251 in a /24
DEFAULT_PRIVATE_PATHS: tuple[str, ...] = (
    "/etc/postfix",
    "/etc/courier",
    "/etc/nginx",
    "/var/spool/postfix",
    "/var/mail",
)
READY_TIMEOUT = 30.0


class HarnessError(RuntimeError):
    """The test-node harness could not set something up."""


# --------------------------------------------------------------------------- helpers


def _run(argv: Sequence[str], *, input: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        list(argv), input=input, capture_output=True, text=True, check=False, timeout=120
    )
    if check and proc.returncode != 0:
        raise HarnessError(
            f"{shlex.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}"
            + (f"\n--- input ---\n{input[:2000]}" if input else "")
        )
    return proc.stdout


def ensure_openssh_installed() -> None:
    """Install ``openssh-server`` when ``/usr/sbin/sshd`` is missing; make /run/sshd.

    ``apt-get update`` only runs when the plain install fails, since it is the slow
    part and the package lists are usually fresh enough.
    """
    if not Path(SSHD).exists():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = [
            "apt-get",
            "-o",
            "DPkg::Lock::Timeout=600",
            "install",
            "-y",
            "--no-install-recommends",
            "openssh-server",
        ]
        if subprocess.run(install, env=env, capture_output=True, check=False).returncode:
            subprocess.run(
                ["apt-get", "-o", "DPkg::Lock::Timeout=600", "update"],
                env=env,
                capture_output=True,
                check=False,
            )
            proc = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
            if proc.returncode:
                raise HarnessError(f"cannot install openssh-server: {proc.stderr[-2000:]}")
    # sshd refuses to start without its privilege-separation directory.
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)


def _generate_host_key(private_path: Path) -> str:
    """Write an Ed25519 host key (OpenSSH format, 0600) and return ``"type base64"``.

    Generated in-process: faster than one ssh-keygen per node with 50+ nodes.
    """
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode("ascii")
    )
    private_path.unlink(missing_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    private_path.with_name(private_path.name + ".pub").write_text(public + "\n")
    return public


def _copy_tree(source: Path, target: Path) -> None:
    """Copy a directory's contents keeping modes, owners and symlinks (like ``cp -a``).

    In-process because forking cp for each of 6 paths x 50 nodes took seconds. FIFOs are
    recreated; sockets and device nodes are skipped (runtime artefacts of a daemon).
    """
    for dirpath, dirnames, filenames in os.walk(source):
        rel = Path(dirpath).relative_to(source)
        dest_dir = target / rel
        for name in [*dirnames, *filenames]:
            src, dst = Path(dirpath) / name, dest_dir / name
            info = src.lstat()
            if stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(src), dst)
                if name in dirnames:
                    dirnames.remove(name)  # os.walk would not descend anyway; be explicit
            elif stat.S_ISDIR(info.st_mode):
                dst.mkdir()
            elif stat.S_ISREG(info.st_mode):
                shutil.copyfile(src, dst)
            elif stat.S_ISFIFO(info.st_mode):
                os.mkfifo(dst)
            else:
                continue
            os.lchown(dst, info.st_uid, info.st_gid)
            if not stat.S_ISLNK(info.st_mode):
                os.chmod(dst, stat.S_IMODE(info.st_mode))
    info = source.stat()
    os.chown(target, info.st_uid, info.st_gid)
    os.chmod(target, stat.S_IMODE(info.st_mode))


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _process_table() -> dict[int, int]:
    """Map pid -> parent pid for every process visible in /proc."""
    table: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                data = handle.read()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after ")".
        fields = data[data.rfind(")") + 2 :].split()
        table[int(entry)] = int(fields[1])
    return table


def _descendants(root_pids: Iterable[int]) -> set[int]:
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, ppid in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    stack = list(root_pids)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _pids_in_mount_ns(ns_link: str) -> set[int]:
    pids: set[int] = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry}/ns/mnt") == ns_link:
                    pids.add(int(entry))
    return pids


def _kill_all(pids: Iterable[int], grace: float = 2.0) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL whatever is left."""
    pids = {p for p in pids if p > 1 and p != os.getpid()}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if _alive(p)}
        if pids:
            time.sleep(0.02)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    # A zombie of a child of ours is dead for our purposes (reaped by Popen.wait later).
    return state != "Z"


def _is_sshd(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"sshd" in handle.read()
    except OSError:
        return False


_UNSHARE_WORKS: bool | None = None


def _unshare_works() -> bool:
    global _UNSHARE_WORKS
    if _UNSHARE_WORKS is None:
        proc = subprocess.run(
            ["unshare", "--uts", "--mount", "--propagation", "private", "true"],
            capture_output=True,
            check=False,
        )
        _UNSHARE_WORKS = proc.returncode == 0
    return _UNSHARE_WORKS


# --------------------------------------------------------------------------- node


class TestNode:
    """One sshd test node. Created by :class:`NodeCluster`; do not build directly."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, cluster: NodeCluster, index: int) -> None:
        self.cluster = cluster
        self.index = index
        #: Short name, also the node's directory under the cluster's base_dir.
        self.name = f"node{index + 1}"
        self.hostname = f"{self.name}.ums.test"
        self.dir = cluster.base_dir / self.name
        #: Private root on this machine: a node path ``/etc/postfix/main.cf`` is the
        #: host file ``root / "etc/postfix/main.cf"`` (for paths in ``mounted_paths``:
        #: ``private_paths`` plus a fresh ``/root`` home).
        self.root = self.dir / "root"
        self.netns: str | None = None
        self.veth: str | None = None
        if cluster.mode == "netns":
            self.netns = f"ums{cluster.slot}n{index}"
            self.veth = f"ums{cluster.slot}v{index}"
            self.address = f"10.231.{cluster.slot}.{index + 2}"
            self.port = 22
        else:
            self.address = "127.0.0.1"
            self.port = _free_loopback_port()
        self.config_path = self.dir / "sshd_config"
        self.host_key_path = self.dir / "ssh_host_ed25519_key"
        self.authorized_keys_path = self.dir / "authorized_keys"
        self.log_path = self.dir / "sshd.log"
        self.pid_path = self.dir / "sshd.pid"
        #: The node's public host key, ``"ssh-ed25519 base64"``.
        self.host_key = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._mnt_ns: str | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<TestNode {self.name} {self.address}:{self.port} {state}>"

    # ------------------------------------------------------------------ info

    @property
    def known_host_keys(self) -> list[str]:
        """The pinned-key list a connector needs for this node."""
        return [self.host_key]

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process else None

    def path(self, node_path: str) -> Path:
        """Host path of a file the node sees at ``node_path`` (inside a private path)."""
        if not node_path.startswith("/"):
            raise ValueError("node_path must be absolute")
        if self.cluster.isolated and not any(
            node_path == p or node_path.startswith(p.rstrip("/") + "/")
            for p in self.cluster.mounted_paths
        ):
            raise ValueError(f"{node_path} is not inside a private path of the node")
        if not self.cluster.isolated:
            return Path(node_path)
        return self.root / node_path.lstrip("/")

    # ------------------------------------------------------------------ setup

    def _prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.host_key_path.exists():
            self.host_key = _generate_host_key(self.host_key_path)
        elif not self.host_key:
            self.host_key = (
                self.host_key_path.with_name(self.host_key_path.name + ".pub").read_text().strip()
            )
        self.authorized_keys_path.write_text(self.cluster.authorized_public_key.strip() + "\n")
        self.config_path.write_text(self._sshd_config())
        if self.cluster.isolated:
            if self.cluster.private_home:
                home = self.root / "root"
                if not home.exists():
                    # A fresh root home from /etc/skel, as on a new node. The host's own
                    # /root/.bashrc (here: pyenv init) would otherwise run on every SSH
                    # command, since bash sources it when started by sshd: +160 ms each.
                    home.mkdir(parents=True)
                    if Path("/etc/skel").is_dir():
                        _copy_tree(Path("/etc/skel"), home)
                    home.chmod(0o700)
            for real in self.cluster.private_paths:
                private = self.root / real.lstrip("/")
                real_path = Path(real)
                if not real_path.exists():
                    # A bind mount needs a mount point; an empty directory is harmless
                    # to a later package install (dpkg fills existing directories).
                    real_path.mkdir(parents=True, exist_ok=True)
                if private.exists():
                    continue
                private.mkdir(parents=True)
                if real_path.is_dir() and self.cluster.seed_private_dirs:
                    # Start from the host's package defaults, like a freshly installed
                    # node (e.g. Debian's main.cf once postfix is installed).
                    _copy_tree(real_path, private)

    def _sshd_config(self) -> str:
        # No PAM, no DNS, no motd: each costs time per connection and nothing is gained
        # on a test node. MaxStartups is high because benchmarks open 50 connections at
        # once and the default (10:30:100) drops some of them before authentication.
        return "\n".join(
            [
                f"Port {self.port}",
                f"ListenAddress {self.address}",
                f"HostKey {self.host_key_path}",
                f"PidFile {self.pid_path}",
                # The harness key file, and root's own (what bootstrapcore.sh writes).
                f"AuthorizedKeysFile {self.authorized_keys_path} .ssh/authorized_keys",
                "StrictModes no",
                "UsePAM no",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UseDNS no",
                "PrintMotd no",
                "PrintLastLog no",
                "MaxStartups 200:30:400",
                "MaxSessions 64",
                "LogLevel VERBOSE",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )

    def _wrap(self, argv: Sequence[str]) -> list[str]:
        """Command line running ``argv`` inside this node's namespaces and mounts."""
        if not self.cluster.isolated:
            return list(argv)
        steps = [f"hostname {shlex.quote(self.hostname)}"]
        for real in self.cluster.mounted_paths:
            private = self.root / real.lstrip("/")
            steps.append(f"mount --bind {shlex.quote(str(private))} {shlex.quote(real)}")
        # The command is passed as "$@", never spliced into the script.
        script = "set -e; " + "; ".join(steps) + '; exec "$@"'
        wrapped = [
            "unshare",
            "--uts",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            *argv,
        ]
        if self.netns:
            wrapped = ["ip", "netns", "exec", self.netns, *wrapped]
        return wrapped

    def _launch(self) -> None:
        """Start sshd (not waiting for it); ``_wait_ready`` follows."""
        if self.running:
            return
        self.log_path.unlink(missing_ok=True)
        # -D keeps sshd in the foreground, so the Popen pid *is* the listener: ip netns
        # exec, unshare and sh all exec() into the next program.
        argv = self._wrap([SSHD, "-D", "-f", str(self.config_path), "-E", str(self.log_path)])
        self._process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C on pytest must not kill nodes mid-teardown
        )
        self._mnt_ns = None

    def _check_ready(self) -> bool:
        """True once sshd answers with its banner; raises if sshd died."""
        assert self._process is not None
        if self._process.poll() is not None:
            stderr = self._process.stderr
            err = stderr.read().decode(errors="replace") if stderr else ""
            log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            raise HarnessError(
                f"sshd for {self.name} exited with {self._process.returncode}: {err}\n{log}"
            )
        try:
            # Accepting is enough: sshd listens only after loading its config and keys.
            # (Waiting for each banner serialised on sshd's per-connection re-exec.)
            with socket.create_connection((self.address, self.port), timeout=1.0):
                pass
        except OSError:
            return False
        if self.cluster.isolated and self._mnt_ns is None:
            with contextlib.suppress(OSError):
                self._mnt_ns = os.readlink(f"/proc/{self._process.pid}/ns/mnt")
        return True

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        """Start this node's sshd (again) and wait until it accepts connections."""
        self._prepare()
        self._launch()
        self.cluster._wait_ready([self])
        self.cluster._save_registry()

    def stop(self) -> None:
        """Stop sshd and every process in the node (sessions, daemons started over SSH).

        The node's address stays up, so connecting is then refused, as with a node
        whose sshd is down.
        """
        self.cluster._stop_nodes([self])

    def restart(self) -> None:
        self.stop()
        self.start()

    def regenerate_host_key(self) -> str:
        """Restart the node with a new host key (same type); return the new key."""
        self.stop()
        self.host_key = _generate_host_key(self.host_key_path)
        self.start()
        return self.host_key

    def exec_in_node(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the node (its network, hostname and private mounts).

        For test assertions ("what does the node see?"), bypassing SSH. Works whether or
        not sshd is running.
        """
        proc = subprocess.run(
            self._wrap(list(argv)),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise HarnessError(
                f"{shlex.join(argv)} in {self.name} failed ({proc.returncode}): "
                f"{proc.stderr.strip()}"
            )
        return proc

    def processes(self) -> set[int]:
        """Pids of everything running in this node (sshd, its sessions, their daemons)."""
        pids: set[int] = set()
        if self._process is not None:
            if self._process.poll() is None:
                pids.add(self._process.pid)
            pids |= _descendants([self._process.pid])
        if self._mnt_ns:
            pids |= _pids_in_mount_ns(self._mnt_ns)
        if self.netns:
            out = _run(["ip", "netns", "pids", self.netns], check=False)
            pids |= {int(p) for p in out.split() if p.isdigit()}
        return {p for p in pids if _alive(p)}


# --------------------------------------------------------------------------- cluster


class NodeCluster:
    """A set of sshd test nodes sharing one slot (bridge, subnet, name prefix).

    ``authorized_public_key`` (an ``authorized_keys`` line) is the key the controller
    logs in with as root. ``mode`` is ``"netns"``, ``"loopback"`` or ``None`` (from
    ``UMS_TEST_NODES``, else netns with loopback as the fallback). Use as a context
    manager or call :meth:`stop` in a ``finally``; teardown is idempotent and also
    runs at interpreter exit.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        count: int,
        authorized_public_key: str,
        *,
        mode: str | None = None,
        private_paths: Sequence[str] = DEFAULT_PRIVATE_PATHS,
        seed_private_dirs: bool = True,
        private_home: bool = True,
    ) -> None:
        if count < 1 or count > MAX_NODES_PER_SLOT:
            raise ValueError(f"count must be between 1 and {MAX_NODES_PER_SLOT}")
        for path in private_paths:
            if not path.startswith("/") or path.rstrip("/") in ("", "/etc", "/usr", "/var"):
                raise ValueError(f"refusing to make {path!r} private")
        self.base_dir = Path(base_dir).resolve()
        self.count = count
        self.authorized_public_key = authorized_public_key
        self.private_paths = tuple(p.rstrip("/") for p in private_paths)
        self.seed_private_dirs = seed_private_dirs
        self.private_home = private_home
        for hidden in self.mounted_paths:
            # The node's own files (config, host key) must stay visible under its mounts.
            if self.base_dir == Path(hidden) or Path(hidden) in self.base_dir.parents:
                raise ValueError(f"base_dir must not be inside the private path {hidden}")
        requested = mode or os.environ.get("UMS_TEST_NODES") or None
        if requested not in (None, "netns", "loopback"):
            raise ValueError(f"UMS_TEST_NODES/mode must be 'netns' or 'loopback', not {mode!r}")
        self._requested_mode = requested
        self.mode: str = requested or "netns"
        #: True when nodes have their own hostname and private mounts.
        self.isolated = False
        self.slot = -1
        self.nodes: list[TestNode] = []
        self._lock: IO[str] | None = None
        self._network_up = False
        self._started = False

    def __enter__(self) -> NodeCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def mounted_paths(self) -> tuple[str, ...]:
        """Every node path that is private per node: ``private_paths`` plus /root."""
        return (*self.private_paths, "/root") if self.private_home else self.private_paths

    @property
    def bridge(self) -> str:
        return f"umsbr{self.slot}"

    @property
    def bridge_address(self) -> str:
        return f"10.231.{self.slot}.1"

    # ------------------------------------------------------------------ start

    def start(self) -> NodeCluster:
        """Bring up the network and all nodes; returns self. Cleans up on failure."""
        if self._started:
            return self
        if os.geteuid() != 0:
            raise HarnessError("the sshd test-node harness needs root")
        ensure_openssh_installed()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_slot()
        self._started = True
        atexit.register(self.stop)
        try:
            self._cleanup_stale()
            if self.mode == "netns":
                try:
                    self._setup_network()
                except HarnessError:
                    if self._requested_mode == "netns":
                        raise
                    # No netns here (e.g. an unprivileged container): fall back.
                    self._teardown_network()
                    self.mode = "loopback"
            self.isolated = _unshare_works()
            self.nodes = [TestNode(self, i) for i in range(self.count)]
            for node in self.nodes:
                node._prepare()
            # Catch a config mistake once, with a readable message, not 50 dead sshds.
            _run([SSHD, "-t", "-f", str(self.nodes[0].config_path)])
            for node in self.nodes:
                node._launch()
            self._wait_ready(self.nodes)
            self._save_registry()
        except BaseException:
            self.stop()
            raise
        return self

    def _acquire_slot(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        for slot in range(MAX_SLOTS):
            handle = open(STATE_DIR / f"slot{slot}.lock", "a+")  # noqa: SIM115 - held open
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self.slot = slot
            self._lock = handle
            return
        raise HarnessError(f"all {MAX_SLOTS} test-node slots are in use")

    def _registry_path(self) -> Path:
        return STATE_DIR / f"slot{self.slot}.json"

    def _save_registry(self) -> None:
        data = {
            "owner_pid": os.getpid(),
            "base_dir": str(self.base_dir),
            "sshd_pids": [n.pid for n in self.nodes if n.pid],
        }
        self._registry_path().write_text(json.dumps(data))

    def _cleanup_stale(self) -> None:
        """Remove what a crashed run left in this slot (we hold its lock, so it is dead)."""
        registry = self._registry_path()
        if registry.exists():
            with contextlib.suppress(ValueError, OSError):
                data = json.loads(registry.read_text())
                # Only sshd pids: the pid may have been reused by something else since.
                stale = [p for p in data.get("sshd_pids", []) if _is_sshd(p)]
                _kill_all(set(stale) | _descendants(stale), grace=1.0)
            registry.unlink(missing_ok=True)
        pattern = re.compile(rf"^ums{self.slot}n\d+$")
        namespaces = [
            line.split()[0]
            for line in _run(["ip", "netns", "list"], check=False).splitlines()
            if line.strip() and pattern.match(line.split()[0])
        ]
        self._delete_namespaces(namespaces)
        link_pattern = re.compile(rf"^(ums{self.slot}v\d+|umsbr{self.slot})$")
        for line in _run(["ip", "-o", "link", "show"], check=False).splitlines():
            parts = line.split(":", 2)
            if len(parts) > 1:
                name = parts[1].strip().split("@", 1)[0]
                if link_pattern.match(name):
                    _run(["ip", "link", "del", name], check=False)

    def _setup_network(self) -> None:
        self._network_up = True
        net = f"10.231.{self.slot}"
        root_cmds = [
            f"link add {self.bridge} type bridge",
            f"addr add {self.bridge_address}/24 dev {self.bridge}",
            f"link set {self.bridge} up",
        ]
        for i in range(self.count):
            ns, veth = f"ums{self.slot}n{i}", f"ums{self.slot}v{i}"
            root_cmds += [
                f"netns add {ns}",
                # The peer is created directly inside the namespace, so it can be called
                # eth0 there without clashing with the host's eth0.
                f"link add {veth} type veth peer name eth0 netns {ns}",
                f"link set {veth} master {self.bridge} up",
            ]
        _run(["ip", "-batch", "-"], input="\n".join(root_cmds) + "\n")
        for i in range(self.count):
            ns = f"ums{self.slot}n{i}"
            node_cmds = [
                "link set lo up",
                f"addr add {net}.{i + 2}/24 dev eth0",
                "link set eth0 up",
                f"route add default via {self.bridge_address}",
            ]
            _run(["ip", "-n", ns, "-batch", "-"], input="\n".join(node_cmds) + "\n")

    def _wait_ready(self, nodes: Sequence[TestNode]) -> None:
        pending = list(nodes)
        deadline = time.monotonic() + READY_TIMEOUT
        while pending:
            pending = [n for n in pending if not n._check_ready()]
            if not pending:
                return
            if time.monotonic() > deadline:
                names = ", ".join(n.name for n in pending)
                raise HarnessError(f"sshd did not come up within {READY_TIMEOUT}s on {names}")
            time.sleep(0.02)

    # ------------------------------------------------------------------ stop

    def _stop_nodes(self, nodes: Sequence[TestNode]) -> None:
        pids: set[int] = set()
        for node in nodes:
            pids |= node.processes()
        _kill_all(pids)
        for node in nodes:
            if node._process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node._process.wait(timeout=5)
                if node._process.stderr:
                    node._process.stderr.close()
                node._process = None
            node._mnt_ns = None
        if self.slot >= 0 and self._lock is not None:
            with contextlib.suppress(OSError):
                self._save_registry()

    def _delete_namespaces(self, namespaces: Sequence[str]) -> None:
        pids: set[int] = set()
        for ns in namespaces:
            out = _run(["ip", "netns", "pids", ns], check=False)
            pids |= {int(p) for p in out.split() if p.isdigit()}
        _kill_all(pids, grace=1.0)
        if namespaces:
            # -force: keep deleting the rest if one is already gone.
            _run(
                ["ip", "-force", "-batch", "-"],
                input="".join(f"netns del {ns}\n" for ns in namespaces),
                check=False,
            )

    def _teardown_network(self) -> None:
        if not self._network_up:
            return
        self._network_up = False
        namespaces = [f"ums{self.slot}n{i}" for i in range(self.count)]
        existing = set(_run(["ip", "netns", "list"], check=False).split())
        self._delete_namespaces([ns for ns in namespaces if ns in existing])
        # Deleting a namespace deletes its veth end and so the pair; links left over
        # from a half-finished setup are removed here.
        links = {
            line.split(":", 2)[1].strip().split("@", 1)[0]
            for line in _run(["ip", "-o", "link", "show"], check=False).splitlines()
            if line.count(":") >= 2
        }
        wanted = [f"ums{self.slot}v{i}" for i in range(self.count)] + [self.bridge]
        leftovers = [name for name in wanted if name in links]
        if leftovers:
            _run(
                ["ip", "-force", "-batch", "-"],
                input="".join(f"link del {name}\n" for name in leftovers),
                check=False,
            )

    def stop(self) -> None:
        """Kill all node processes, delete namespaces, veths and bridge, free the slot."""
        if not self._started:
            return
        self._started = False
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        try:
            self._stop_nodes(self.nodes)
        finally:
            try:
                self._teardown_network()
            finally:
                if self._lock is not None:
                    with contextlib.suppress(OSError):
                        self._registry_path().unlink(missing_ok=True)
                    self._lock.close()  # releases the flock
                    self._lock = None
