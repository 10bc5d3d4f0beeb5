"""Converge one node to its desired state: render, compare, stage, validate, install, reload.

The engine is service-agnostic (DESIGN.md principle 2, CONVENTIONS.md's pyinfra/Ansible
rules):

1. every applicable service renders its files locally from plain data, and a service
   with a preparation step (:meth:`~deploy.services.base.Service.prepare`, e.g. the ZFS
   mail store's datasets) plans its non-file changes from the node's facts;
2. the node reports sha256, mode and owner of all those files in ONE command;
3. a dry run stops here and returns a unified diff per changed file and the planned
   preparation commands as shell lines;
4. otherwise the preparation commands run first, in service order, so everything files
   and activations rely on (a dataset mounted where Courier creates Maildirs) exists;
5. then, per service with changes: the whole ``config_root`` is copied to a stage
   *inside* it (same filesystem, so installing is a rename) and the changed files are
   written there; the services' own checkers then validate their staged trees
   concurrently (one SSH channel each). On :class:`~deploy.services.base.CheckFailed`
   every stage is removed and nothing live was touched; the error carries the checker's
   output;
6. in service order, each changed file (and what the checker compiled from it) is
   renamed into place, keeping the mode and owner set in the stage, unless the node's
   fence (:data:`FENCE_NAME`) saw a newer converge's lease token (:class:`Superseded`);
7. only services whose files changed are activated (maps compiled, daemons reloaded),
   then probed (:meth:`~deploy.services.base.Service.probe`: e.g. SMTP ``RCPT`` to a
   known address); a failed probe puts the previous files back (kept beside as
   ``*.ums-prev`` during the install), reloads and fails the converge with the reason;
8. a converge is done only when the running daemon serves the new configuration: the
   node keeps, per service, the hash of the installed files and the hash the daemon was
   last (re)loaded with (:data:`STATE_PREFIX`); a service whose files are current but whose
   loaded hash differs (a crash between the renames and the reload) is reloaded and
   probed without any file change.

Reading the node comes first and every step is idempotent, so running a converge again
after any failure (what the reconciler does) finishes the work. Stages left by a
crashed converge are removed at the start of the next one; a failed stage or upload
removes its own stage. :data:`PHASE_HOOK` lets tests stop a converge at each phase.

Nothing built from user data reaches a shell: commands are argument lists, and the two
small ``sh -c`` scripts below are constants that receive paths as ``"$@"``.
"""

from __future__ import annotations

import contextlib
import difflib
import posixpath
import secrets
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from django.utils.translation import gettext_noop

from ums.joblog import log_entry

from .connector.base import CommandFailed, Connector, ConnectorError
from .services.base import (
    CheckFailed,
    DesiredState,
    LiveFile,
    ManagedFile,
    NotIncremental,
    Preparation,
    PrepareFailed,
    ProbeFailed,
    Service,
)

STAGE_PREFIX = ".ums-stage-"
#: Largest file a dry run diffs line by line; bigger ones get a summary.
MAX_DIFF_BYTES = 2_000_000
MAX_DIFF_CHARS = 200_000

# Prints "mode:owner:group sha256" or "-" per path, in argument order. A constant script:
# paths arrive as positional arguments and are never parsed as shell code.
_FACTS_SCRIPT = (
    'for f in "$@"; do '
    'if [ -f "$f" ]; then '
    'printf "%s %s\\n" "$(stat -c %a:%U:%G -- "$f")" "$(sha256sum < "$f" | cut -c1-64)"; '
    "else echo -; fi; done"
)

Log = Callable[[str], None]

#: Per service, the file ``<config root>/.ums-state-<service>`` on the node (see
#: :func:`state_file`): ``installed <hash>`` (the files the last install put live) and
#: ``loaded <hash>`` (what the daemon was last reloaded with and probed on). Hash:
#: :func:`config_digest` of the service's files. Beside the files it describes, so it
#: lives and dies with them (a reinstalled node has neither) and every node and every
#: test instance of a service has its own.
STATE_PREFIX = ".ums-state-"
#: Beside each live file during an install: its previous version, for the rollback.
PREV_SUFFIX = ".ums-prev"
#: ``<config root>/.ums-fence`` on the node: the highest converge lease token (fencing
#: token, :mod:`deploy.dirty`) whose install went through there, as a zero-padded number.
#: The install step refuses an older token (see :func:`install_staged`), so a converge
#: given up for dead cannot put its older files over a newer converge's. Beside the run
#: state, for the same reason: it lives and dies with the files it guards.
FENCE_NAME = ".ums-fence"
#: Exit status of the install script when the fence refused it.
FENCE_REFUSED = 75

#: Test hook (None in production): called as ``PHASE_HOOK(phase, service)`` at each step
#: of a real converge. Per service, in order: ``"stage"`` (before its stage is made),
#: ``"validate"`` (staged, before its checker runs; called from the check thread),
#: ``"install"`` (checked, before the renames), ``"reload"`` (files live, before the
#: daemon is activated), ``"probe"`` (activated, before the post-flight probe),
#: ``"record"`` (probed, before the loaded hash is written). A hook may raise (the
#: converge stops there as if the controller died) or break the node (kill its sshd);
#: ``tests/converge/test_faults.py`` does both.
PHASE_HOOK: Callable[[str, str], None] | None = None


def phase(name: str, service: str) -> None:
    """Tell :data:`PHASE_HOOK` (if any) that ``service`` reached ``name``."""
    hook = PHASE_HOOK
    if hook is not None:
        hook(name, service)


class ConvergeError(Exception):
    """Converge stopped; ``output`` holds what the checker or command printed."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class Superseded(ConvergeError):
    """The node's fence holds a newer token than this converge's: its install was refused
    and no live file was touched; the newer converge's outcome stands."""

    def __init__(self, seen: int) -> None:
        super().__init__(f"a newer converge (token {seen}) already configured this node")
        self.seen = seen


@dataclass
class FileChange:
    """One file whose content, mode or owner differs from what the node has."""

    service: str
    file: ManagedFile
    remote_sha256: str | None  # None: the file does not exist on the node
    remote_meta: str | None  # "mode:owner:group"

    @property
    def is_new(self) -> bool:
        return self.remote_sha256 is None

    @property
    def content_changed(self) -> bool:
        return self.remote_sha256 != sha256(self.file.content)


@dataclass
class ConvergeResult:
    """What a converge did (or, for a dry run, would do)."""

    dry_run: bool
    changed: dict[str, list[str]] = field(default_factory=dict)  # service -> paths
    diffs: dict[str, str] = field(default_factory=dict)  # path -> unified diff (dry run)
    activated: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    # service -> preparation commands as shell lines (run, or for a dry run planned)
    prepared: dict[str, list[str]] = field(default_factory=dict)
    # service -> what its preparation step reports (orphaned datasets, storage mode...)
    reports: dict[str, dict] = field(default_factory=dict)
    #: Services whose changes took the incremental path (e.g. Postfix's postmap -i).
    incremental: list[str] = field(default_factory=list)
    #: Services installed as soon as their own check passed (see apply_services).
    live_alone: list[str] = field(default_factory=list)
    #: Services reloaded with no file change because the daemon ran an older
    #: configuration than the installed one (for a dry run: would be reloaded).
    reloaded: list[str] = field(default_factory=list)
    #: Services whose post-flight probe passed, with what it saw.
    probed: dict[str, str] = field(default_factory=dict)

    @property
    def has_changes(self) -> bool:
        return bool(self.changed or self.prepared)

    def as_dict(self) -> dict:
        return {
            "dryRun": self.dry_run,
            "services": self.services,
            "changed": self.changed,
            "prepared": self.prepared,
            "reports": self.reports,
            "activated": self.activated,
            "incremental": self.incremental,
            "liveAlone": self.live_alone,
            "reloaded": self.reloaded,
            "probed": self.probed,
            "diffs": self.diffs,
        }


def sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _meta(file: ManagedFile) -> str:
    return f"{file.mode:o}:{file.owner}:{file.group}"


def applicable_services(
    state: DesiredState, services: Iterable[Service] | None = None
) -> list[Service]:
    if services is None:
        from .services.registry import SERVICES

        services = SERVICES
    # Bound to the node: a service whose config root depends on the OS (clamd on Rocky
    # reads /etc/clamd.d) is staged, checked and recorded in that node's directory.
    return [s.for_node(state.node) for s in services if s.applies_to_state(state)]


def render(service: Service, state: DesiredState) -> list[ManagedFile]:
    """Render and check each path lies inside the service's config root (it is staged)."""
    try:
        files = service.render(state)
    except ValueError as exc:  # UnsafeName and the like: a value that must not go out
        raise ConvergeError(f"{service.name}: cannot render: {exc}") from exc
    root = service.config_root.rstrip("/") + "/"
    seen: set[str] = set()
    for file in files:
        path = posixpath.normpath(file.path)
        if path != file.path or not path.startswith(root) or STAGE_PREFIX in path:
            raise ConvergeError(f"{service.name}: {file.path!r} is outside {service.config_root}")
        if path in seen:
            raise ConvergeError(f"{service.name}: {file.path} rendered twice")
        seen.add(path)
    return files


def remote_facts(conn: Connector, paths: list[str]) -> dict[str, tuple[str, str] | None]:
    """(meta, sha256) of each path on the node, or None when missing; one command."""
    if not paths:
        return {}
    result = conn.run(["sh", "-c", _FACTS_SCRIPT, "sh", *paths], timeout=600).check()
    lines = result.stdout.splitlines()
    if len(lines) != len(paths):
        raise ConvergeError("unexpected output while reading file facts", result.stdout[-2000:])
    facts: dict[str, tuple[str, str] | None] = {}
    for path, line in zip(paths, lines, strict=True):
        if line == "-":
            facts[path] = None
        else:
            meta, _sep, digest = line.partition(" ")
            facts[path] = (meta, digest)
    return facts


def plan(
    conn: Connector,
    state: DesiredState,
    services: list[Service],
    *,
    unchanged: dict[str, str] | None = None,
    tracking: Tracking | None = None,
) -> dict[str, list[FileChange]]:
    """Per service, the files that differ from the node (content, mode or owner).

    ``unchanged`` (optional) receives path -> sha256 of every file already as rendered;
    ``tracking`` (optional) each service's rendered files and the digests of the node's
    files before and after (see :class:`Tracking`).
    """
    rendered = {service.name: render(service, state) for service in services}
    paths = [f.path for files in rendered.values() for f in files]
    facts = remote_facts(conn, paths)
    changes: dict[str, list[FileChange]] = {}
    for service in services:
        want: dict[str, str | None] = {}
        had: dict[str, str | None] = {}
        for file in rendered[service.name]:
            fact = facts.get(file.path)
            remote_meta, remote_sha = fact if fact else (None, None)
            digest = sha256(file.content)
            want[file.path], had[file.path] = digest, remote_sha
            if remote_sha == digest and remote_meta == _meta(file):
                if unchanged is not None:
                    unchanged[file.path] = remote_sha
                continue
            changes.setdefault(service.name, []).append(
                FileChange(service.name, file, remote_sha, remote_meta)
            )
        if tracking is not None:
            tracking.files[service.name] = rendered[service.name]
            tracking.want[service.name] = config_digest(want)
            tracking.had[service.name] = config_digest(had)
    return changes


# --------------------------------------------------------------------------- run state


def state_file(service: Service) -> str:
    """Where the node keeps ``service``'s record (see :data:`STATE_PREFIX`)."""
    return f"{service.config_root.rstrip('/')}/{STATE_PREFIX}{service.name}"


def fence_file(service: Service) -> str:
    """The service's fence file on the node (see :data:`FENCE_NAME`)."""
    return f"{service.config_root.rstrip('/')}/{FENCE_NAME}"


def fence_token(token: int | None) -> str:
    """The install script's token argument: a non-negative int, or "-" for no fence."""
    if token is None:
        return "-"
    if type(token) is not int or not 0 <= token < 2**63:
        raise ValueError(f"invalid fencing token {token!r}")
    return str(token)


def config_digest(files: dict[str, str | None]) -> str:
    """One hash for a service's files: path -> sha256 (None: missing), order-free."""
    lines = "".join(f"{path} {digest or '-'}\n" for path, digest in sorted(files.items()))
    return sha256(lines.encode())


@dataclass(frozen=True)
class RunState:
    """What a node recorded for one service (empty: nothing recorded yet)."""

    installed: str = ""
    loaded: str = ""


@dataclass
class Tracking:
    """What converge knows of each service's files and running configuration.

    ``run``: the node's record (read first, :func:`read_run_state`); ``want``: digest of
    the rendered files (what the node has once installed); ``had``: digest of the files
    the node had when planned (what a rollback returns to); ``files``: the rendered
    files (activated again when only a reload is needed).
    """

    state: DesiredState
    run: dict[str, RunState] = field(default_factory=dict)
    want: dict[str, str] = field(default_factory=dict)
    had: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[ManagedFile]] = field(default_factory=dict)
    probed: dict[str, str] = field(default_factory=dict)
    #: The converge's lease token, checked and recorded by every install (None: unfenced).
    fence: int | None = None


# Arguments: "1" to remove stages a crashed converge left, then (service name, config
# root, state file) triples. Prints "name installed loaded" per service ("-": none).
_RUN_STATE_SCRIPT = r"""
set -u
clean=$1; shift
while [ $# -ge 3 ]; do
  name=$1; root=$2; f=$3; shift 3
  if [ "$clean" = 1 ] && [ -d "$root" ]; then
    find "$root" -mindepth 1 -maxdepth 1 -name '.ums-stage-*' -exec rm -rf -- {} + || exit 1
  fi
  i=; l=
  if [ -f "$f" ]; then
    i=$(sed -n 's/^installed //p' "$f"); l=$(sed -n 's/^loaded //p' "$f")
  fi
  printf '%s %s %s
' "$name" "${i:--}" "${l:--}"
done
"""


def read_run_state(conn: Connector, services: list[Service], *, clean: bool) -> dict[str, RunState]:
    """Each service's record on the node, in one command; with ``clean``, stages a
    crashed converge left in the services' config roots are removed first."""
    args: list[str] = []
    for service in services:
        if service.config_root.rstrip("/"):  # a service without files keeps no record
            args += [service.name, service.config_root.rstrip("/"), state_file(service)]
    if not args:
        return {}
    result = conn.run(
        ["sh", "-c", _RUN_STATE_SCRIPT, "sh", "1" if clean else "0", *args],
        timeout=600,
    )
    if not result.ok:
        raise ConvergeError("cannot read the node's converge state", result.stderr[-2000:])
    found: dict[str, RunState] = {}
    for line in result.stdout.splitlines():
        name, installed, loaded = ([*line.split(), "-", "-"])[:3]
        found[name] = RunState(
            "" if installed == "-" else installed, "" if loaded == "-" else loaded
        )
    return found


# Arguments: state file, installed hash, loaded hash, then live paths whose previous
# version (*.ums-prev) is no longer needed. Written to a temporary file and renamed: a
# reader sees the old record or the new one.
_RECORD_SCRIPT = r"""
set -u
f=$1; installed=$2; loaded=$3; shift 3
printf 'installed %s\nloaded %s\n' "$installed" "$loaded" > "$f.tmp" || exit 1
mv -f -- "$f.tmp" "$f" || exit 1
for f in "$@"; do rm -f -- "$f.ums-prev"; done
"""

# Arguments: (live path, "1" if the install created it) pairs. Puts each previous
# version back; a file that did not exist before is removed.
_ROLLBACK_SCRIPT = r"""
set -u
while [ $# -ge 2 ]; do
  live=$1; new=$2; shift 2
  if [ -e "$live.ums-prev" ]; then mv -f -T -- "$live.ums-prev" "$live" || exit 1
  elif [ "$new" = 1 ]; then rm -f -- "$live" || exit 1
  fi
done
"""


def record_run_state(
    conn: Connector, service: Service, installed: str, loaded: str, done: Iterable[str] = ()
) -> None:
    conn.run(
        ["sh", "-c", _RECORD_SCRIPT, "sh", state_file(service), installed, loaded, *done],
        timeout=120,
    ).check()


def _activate_probe_record(
    conn: Connector,
    service: Service,
    files: list[ManagedFile],
    live: list[str],
    created: set[str],
    tracking: Tracking,
    log: Log,
    *,
    incremental: bool = False,
) -> None:
    """Activate ``service`` on its live files, probe it, record what it runs.

    On a failed probe the previous files (``*.ums-prev``, ``created`` ones removed) go
    back, the service is activated again and probed again, the record says the old
    files are what runs, and :class:`ConvergeError` says why ("rolled back: ...").
    """
    name = service.name
    phase("reload", name)
    try:
        if incremental:
            service.activate_incremental(conn, files)
        else:
            service.activate(conn, files)
        log(log_entry(gettext_noop("%(service)s: activated"), service=name))
        phase("probe", name)
        seen = service.probe(conn, tracking.state)
    except (ProbeFailed, CheckFailed) as exc:
        # A daemon that refuses to reload its new files is as broken as one that
        # answers wrongly: both go back to the previous files.
        log(
            log_entry(
                gettext_noop("%(service)s: post-flight probe failed: %(output)s; rolling back"),
                service=name,
                output=exc.output,
            )
        )
        args: list[str] = []
        for path in live:
            args += [path, "1" if path in created else "0"]
        conn.run(["sh", "-c", _ROLLBACK_SCRIPT, "sh", *args], timeout=120).check()
        after = ""
        try:
            service.activate(conn, files)
            service.probe(conn, tracking.state, strict=False)
        except (ProbeFailed, CheckFailed) as again:
            after = f"; after the rollback the probe still fails: {again.output}"
        had = tracking.had.get(name, "")
        # Recorded as loaded only when the previous files demonstrably run again.
        record_run_state(conn, service, had, "" if after else had)
        if after:  # "; after the rollback the probe still fails: <output>"
            log(
                log_entry(
                    gettext_noop(
                        "%(service)s: previous files restored and reloaded; "
                        "after the rollback the probe still fails: %(output)s"
                    ),
                    service=name,
                    output=after.partition(": ")[2],
                )
            )
        else:
            log(
                log_entry(
                    gettext_noop("%(service)s: previous files restored and reloaded"),
                    service=name,
                )
            )
        # The message says it all; an output would only repeat it in the job's error.
        raise ConvergeError(f"{name}: rolled back: {exc.output}{after}") from exc
    if seen:
        tracking.probed[name] = seen
        log(log_entry(gettext_noop("%(service)s: probe passed: %(seen)s"), service=name, seen=seen))
    phase("record", name)
    want = tracking.want.get(name, "")
    record_run_state(conn, service, want, want, live)


def reload_stale(
    conn: Connector, service: Service, tracking: Tracking, log: Log, result: ConvergeResult
) -> None:
    """Reload ``service`` when its files are current but the daemon was last loaded
    with something else (or nothing is recorded): the install of an earlier converge
    went through and its reload did not."""
    name = service.name
    files = tracking.files.get(name) or []
    want = tracking.want.get(name)
    if not files or want is None:
        return
    run = tracking.run.get(name, RunState())
    if run.loaded == want:
        return
    result.reloaded.append(name)
    if result.dry_run:
        return
    log(
        log_entry(
            gettext_noop(
                "%(service)s: files are current but the daemon was loaded with %(loaded)s, "
                "not %(want)s: reloading"
            ),
            service=name,
            loaded=run.loaded[:12],
            want=want[:12],
        )
        if run.loaded
        else log_entry(
            gettext_noop(
                "%(service)s: files are current but the daemon was loaded with nothing "
                "recorded, not %(want)s: reloading"
            ),
            service=name,
            want=want[:12],
        )
    )
    live = [*service.compiled_files(files), *(f.path for f in files)]
    # A failed probe restores whatever *.ums-prev the crashed install left and records
    # nothing as loaded: the next converge reloads and probes again (and says why).
    tracking.had[name] = ""
    _activate_probe_record(conn, service, files, live, set(), tracking, log)


def _diff(conn: Connector, change: FileChange) -> str:
    file = change.file
    if not change.content_changed:
        return f"mode/owner {change.remote_meta} -> {_meta(file)}\n"
    if getattr(file, "secret", False) or posixpath.basename(file.path) in SECRET_NAMES:
        return "(contains secrets: content changed, diff withheld)\n"
    old = b"" if change.is_new else (conn.get_file(file.path) or b"")
    if max(len(old), len(file.content)) > MAX_DIFF_BYTES:
        return f"(large file: {len(old)} -> {len(file.content)} bytes, diff omitted)\n"
    lines = difflib.unified_diff(
        old.decode(errors="replace").splitlines(keepends=True),
        file.content.decode(errors="replace").splitlines(keepends=True),
        fromfile="/dev/null" if change.is_new else file.path,
        tofile=file.path,
    )
    text = "".join(lines)
    return text if len(text) <= MAX_DIFF_CHARS else text[:MAX_DIFF_CHARS] + "\n(truncated)\n"


#: Files whose diff would show password hashes or keys: dry runs only say they changed.
SECRET_NAMES = frozenset({"userdb", "sasl_passwd"})


def _stage(conn: Connector, service: Service, *, copy: bool = True) -> str:
    """A new stage folder inside the service's config root (a copy of it with ``copy``).

    Removed again if anything fails here (a full disk during the copy), so no partial
    stage is left; stages a crashed converge left are removed by :func:`read_run_state`
    at the start of the next converge, so they are never copied into this one.
    """
    root = service.config_root.rstrip("/")
    stage = f"{root}/{STAGE_PREFIX}{secrets.token_hex(6)}"
    conn.run(["mkdir", "-p", root]).check()
    conn.run(["mkdir", "-m", "700", stage]).check()
    if not copy:
        return stage
    try:
        conn.run(
            [
                "find",
                root,
                "-mindepth",
                "1",
                "-maxdepth",
                "1",
                "!",
                "-name",
                STAGE_PREFIX + "*",
                "!",
                "-name",
                "*" + PREV_SUFFIX,
                "!",
                "-name",
                STATE_PREFIX + "*",
                "!",
                "-name",
                FENCE_NAME,
                "-exec",
                "cp",
                "-a",
                "-t",
                stage,
                "--",
                "{}",
                "+",
            ]
        ).check()
    except BaseException:
        remove_quietly(conn, stage)
        raise
    return stage


def remove_quietly(conn: Connector, path: str) -> None:
    """``rm -rf path``, best effort: during a cleanup the node may be gone (the stage is
    then removed at the start of the next converge), and the first error is the one
    worth reporting."""
    with contextlib.suppress(ConnectorError):
        conn.run(["rm", "-rf", "--", path])


def _staged_path(service: Service, stage: str, path: str) -> str:
    return stage + path[len(service.config_root.rstrip("/")) :]


def stage_files(conn: Connector, service: Service, changes: list[FileChange]) -> str:
    """Copy the service's config root to a new stage and write the changed files there."""
    files = [c.file for c in changes]
    stage = _stage(conn, service)
    try:
        parents = sorted({posixpath.dirname(_staged_path(service, stage, f.path)) for f in files})
        conn.run(["mkdir", "-p", "--", *parents]).check()
        for file in files:
            conn.put_file(
                _staged_path(service, stage, file.path),
                file.content,
                mode=file.mode,
                owner=file.owner,
                group=file.group,
            )
    except BaseException:
        remove_quietly(conn, stage)
        raise
    return stage


def light_stage(conn: Connector, service: Service, changes: list[FileChange]) -> str:
    """A stage holding only the changed files, for the incremental path (no copy of the
    whole config root: the service builds what it needs there from the live files)."""
    stage = _stage(conn, service, copy=False)
    try:
        for change in changes:
            file = change.file
            conn.put_file(
                _staged_path(service, stage, file.path),
                file.content,
                mode=file.mode,
                owner=file.owner,
                group=file.group,
            )
    except BaseException:
        remove_quietly(conn, stage)
        raise
    return stage


def install_staged(
    conn: Connector,
    service: Service,
    stage: str,
    changes: list[FileChange],
    log: Log,
    *,
    incremental: bool = False,
    tracking: Tracking | None = None,
) -> list[ManagedFile]:
    """Rename the validated files (and what the checker compiled) into place; activate.

    Compiled files go first, their sources last: if the converge dies in between, the
    live source still differs from the render, so the next converge sees the change and
    compiles again (the other way round it would find the source current, and a stale
    compiled map would stay live).

    With ``tracking`` (every real converge), each live file's previous version is kept
    beside it as ``*.ums-prev`` and the node's record says the new files are installed,
    in the same command as the renames; after the activation the service is probed,
    rolled back on failure, and the record then says what the daemon runs.

    Fenced: with a lease token (``tracking.fence``), the same command takes an flock on
    the service's :data:`FENCE_NAME` file and refuses (:class:`Superseded`, nothing live
    touched, the stage removed) when it holds a higher token; otherwise it records this
    one and renames under the lock, so of two converges the newer one's files stay.
    """
    files = [c.file for c in changes]
    name = service.name
    sources = [f.path for f in files]
    live = [*service.compiled_files(files), *sources]
    try:
        live_parents = sorted({posixpath.dirname(p) for p in live})
        conn.run(["mkdir", "-p", "--", *live_parents]).check()
        args: list[str] = []
        for path in live:
            # A compiled file exists only if the checker built it.
            kind = "source" if path in sources else "compiled"
            args += [kind, _staged_path(service, stage, path), path]
        phase("install", name)
        installed = tracking.want.get(name, "") if tracking is not None else ""
        token = fence_token(tracking.fence if tracking is not None else None)
        # One command for every rename (a round trip each was a tenth of a full converge).
        done = conn.run(
            ["sh", "-c", _INSTALL_SCRIPT, "sh", "1" if tracking else "0", state_file(service),
             installed or "-", fence_file(service), token, *args]
        )  # fmt: skip
        if done.exit_code == FENCE_REFUSED and done.stdout.startswith("fenced "):
            seen = int(done.stdout.split()[1])  # digits only: the script checked
            log(
                log_entry(
                    gettext_noop(
                        "%(service)s: install refused: the node saw converge token %(seen)s, "
                        "this is %(token)s"
                    ),
                    service=name,
                    seen=seen,
                    token=token,
                )
            )
            raise Superseded(seen)
        done.check()
        log(
            log_entry(
                gettext_noop("%(service)s: installed %(paths)s"),
                service=name,
                paths=", ".join(f.path for f in files),
            )
        )
    finally:
        remove_quietly(conn, stage)
    if tracking is None:
        phase("reload", name)
        if incremental:
            service.activate_incremental(conn, files)
        else:
            service.activate(conn, files)
        log(log_entry(gettext_noop("%(service)s: activated"), service=name))
        return files
    created = {c.file.path for c in changes if c.is_new}
    _activate_probe_record(
        conn, service, files, live, created, tracking, log, incremental=incremental
    )
    return files


# Arguments: "1" to keep previous versions and write the record, the state file, the
# installed hash, then (kind, staged path, live path) triples, in order. mv within one
# filesystem is rename(2): readers see the old file or the new one, never half of it.
# The previous version is a copy, not a hard link: Postfix notices a replaced table
# by its old file's link count dropping to 0, which a link would prevent (an smtpd
# then answered with the old map for good); a reflink where the filesystem has them
# (XFS, btrfs), a plain copy elsewhere. A compiled file the checker did not build is
# skipped; the first failure stops the rest. The record keeps its "loaded" line: the
# daemon still runs what it ran until activate and probe pass.
#
# Fence (see FENCE_NAME): with a token, fd 9 holds an flock on the fence file for the
# whole command (released when sh exits). The file is never renamed (a lock on a replaced
# inode would not exclude anyone) and the token is written in place at a fixed width, so
# it is never seen truncated. A higher token seen: exit FENCE_REFUSED before any rename.
_INSTALL_SCRIPT = r"""
set -u
keep=$1; f=$2; installed=$3; fence=$4; token=$5; shift 5
if [ "$token" != - ]; then
  exec 9>>"$fence" || exit 1
  flock -w 120 9 || exit 1
  seen=; read -r seen < "$fence" || true
  case $seen in ''|*[!0-9]*) seen=0 ;; esac
  if [ "$seen" -gt "$token" ]; then printf 'fenced %s\n' "$seen"; exit 75; fi
  printf '%020d\n' "$token" 1<>"$fence" || exit 1
fi
while [ $# -ge 3 ]; do
  kind=$1; staged=$2; live=$3; shift 3
  if [ "$kind" = compiled ] && [ ! -e "$staged" ]; then continue; fi
  if [ "$keep" = 1 ]; then
    rm -f -- "$live.ums-prev" || exit 1
    if [ -e "$live" ]; then cp -p --reflink=auto -- "$live" "$live.ums-prev" || exit 1; fi
  fi
  mv -f -T -- "$staged" "$live" || exit 1
done
[ "$keep" = 1 ] || exit 0
loaded=
if [ -f "$f" ]; then loaded=$(sed -n 's/^loaded //p' "$f"); fi
printf 'installed %s\nloaded %s\n' "$installed" "${loaded:--}" > "$f.tmp" || exit 1
mv -f -- "$f.tmp" "$f"
"""


class _ThreadLog:
    """Log lines from the check threads, written by the main thread.

    The job's log lives in the database and a Django connection belongs to its thread,
    so threads only collect; :meth:`flush` writes from the calling (main) thread.
    """

    def __init__(self, log: Log) -> None:
        import threading

        self._log = log
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)

    def flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
        for line in lines:
            self._log(line)


def _incremental_candidate(
    service: Service,
    state: DesiredState | None,
    changes: list[FileChange],
    trusted: dict[str, str],
) -> bool:
    """Whether ``service`` may try its incremental path for ``changes``.

    Every changed file must exist on the node with only its content changed (mode and
    owner as rendered), and its live sha256 must be the one the controller last
    installed or saw there (``trusted``): a file edited on the node gets the full path.
    """
    if state is None:
        return False
    for change in changes:
        if change.is_new or change.remote_meta != _meta(change.file):
            return False
        if trusted.get(change.file.path) != change.remote_sha256:
            return False
    return service.incremental_ok(state, [c.file for c in changes])


def apply_services(
    conn: Connector,
    services: list[Service],
    changes: dict[str, list[FileChange]],
    log: Log,
    result: ConvergeResult,
    *,
    state: DesiredState | None = None,
    trusted: dict[str, str] | None = None,
    installed: Callable[[list[ManagedFile]], None] | None = None,
    more: Sequence[Callable[[], dict[str, list[FileChange]]]] = (),
    tracking: Tracking | None = None,
) -> None:
    """Stage every changed service, validate the stages at once, install.

    The checkers (``makeuserdb``, ``postmap`` of every map) are the slowest part of a
    converge and independent of each other: each runs in its own thread on its own
    SSH channel of the one connection. Uploads stay in this thread (one SFTP session).

    Two refinements (see :class:`~deploy.services.base.Service`):

    * **incremental path**: a service whose changes qualify (Postfix: only maps changed,
      live sources exactly as the controller last installed them) gets a stage with only
      the new files and builds what goes live from the live files (``postmap -i``/``-d``
      on a copy of each ``.db``, every changed key looked up). When that does not fit or
      fails, the service falls back to the full path: a full stage, the full check.
    * **going live alone**: a service whose changes nothing else depends on
      (:meth:`~deploy.services.base.Service.goes_live_alone`, Postfix's address maps on a
      relaying node) is installed by its check thread the moment its own check passed,
      without waiting for the others (a new address answers RCPT while ``makeuserdb``
      still runs) and whether or not their checks pass.

    * **planned while earlier checks run**: each of ``more`` (optional) plans a service
      left out of ``changes``; they are called in turn once the services before them are
      staged and their checks started, and their changes join the same rules below.

    Every other service keeps the rules from before: it is installed only when *every*
    check passed, in service order, so a service that relies on another's files (Postfix
    on the LDA's) finds them live first. A failed check of a service always leaves that
    service's live files untouched (its stage is removed).

    With ``tracking``, each install is probed and recorded (see :func:`install_staged`).
    """
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    trusted = trusted or {}
    remember = installed or (lambda files: None)
    changes = dict(changes)
    todo = [s for s in services if changes.get(s.name)]
    if not todo and not more:
        return
    alone: set[str] = set()

    def lead_first(batch: list[Service]) -> list[Service]:
        """Note which of ``batch`` go live alone; those are staged (uploaded) first:
        they are what mail waits for."""
        for s in batch:
            if state is not None and s.goes_live_alone(state, [c.file for c in changes[s.name]]):
                alone.add(s.name)
        return sorted(batch, key=lambda s: s.name not in alone)

    order = lead_first(todo)
    tlog = _ThreadLog(log)
    stages: dict[str, str] = {}
    modes: dict[str, str] = {}  # service -> "incremental" or "full"
    outcome: dict[str, str] = {}  # service -> "live" (installed by its thread) or "checked"
    errors: dict[str, BaseException] = {}

    def check(service: Service, stage: str, mode: str) -> str:
        items = changes[service.name]
        phase("validate", service.name)
        if mode == "incremental":
            live = [LiveFile(c.file, c.remote_sha256 or "") for c in items]
            try:
                service.validate_incremental(conn, stage, live)
            except (NotIncremental, CheckFailed, CommandFailed) as exc:
                remove_quietly(conn, stage)
                tlog(
                    log_entry(
                        gettext_noop(
                            "%(service)s: incremental path not taken (%(reason)s); "
                            "falling back to the full check"
                        ),
                        service=service.name,
                        reason=_first_line(exc),
                    )
                )
                return "fallback"
            tlog(
                log_entry(
                    gettext_noop("%(service)s: incremental update built and verified in the stage"),
                    service=service.name,
                )
            )
        else:
            service.validate(conn, stage)
        if service.name not in alone:
            return "checked"
        install_staged(
            conn, service, stage, items, tlog, incremental=mode == "incremental", tracking=tracking
        )
        return "live"

    def submit(service: Service) -> None:
        items = changes[service.name]
        phase("stage", service.name)
        if _incremental_candidate(service, state, items, trusted):
            modes[service.name] = "incremental"
            stages[service.name] = light_stage(conn, service, items)
            log(
                log_entry(
                    gettext_noop("%(service)s: trying the incremental path for %(count)s file(s)"),
                    service=service.name,
                    count=len(items),
                )
            )
        else:
            modes[service.name] = "full"
            stages[service.name] = stage_files(conn, service, items)
            log(
                log_entry(
                    gettext_noop("%(service)s: validating %(count)s staged file(s)"),
                    service=service.name,
                    count=len(items),
                )
            )
        mode = modes[service.name]
        futures[pool.submit(check, service, stages[service.name], mode)] = service

    pool = ThreadPoolExecutor(max_workers=len(services))
    futures: dict[Future[str], Service] = {}
    try:
        try:
            for service in order:
                submit(service)
            for plan_next in more:
                # Rendered and hash-compared while the checks submitted so far run.
                extra = {name: items for name, items in plan_next().items() if items}
                changes.update(extra)
                for service in lead_first([s for s in services if s.name in extra]):
                    submit(service)
            todo = [s for s in services if changes.get(s.name)]
        except BaseException:
            # Stop submitting; whatever is already running finishes below.
            wait(list(futures))
            raise
        while futures:
            done, _pending = wait(list(futures), return_when=FIRST_COMPLETED)
            for future in done:
                service = futures.pop(future)
                name = service.name
                try:
                    state_of = future.result()
                except BaseException as exc:  # reported below, in service order
                    errors[name] = exc  # its stage is removed below (rm -rf is idempotent)
                    continue
                if state_of == "fallback":
                    modes[name] = "full"
                    tlog.flush()
                    try:
                        stages[name] = stage_files(conn, service, changes[name])
                    except BaseException as exc:
                        stages.pop(name, None)
                        errors[name] = exc
                        continue
                    log(
                        log_entry(
                            gettext_noop("%(service)s: validating %(count)s staged file(s)"),
                            service=name,
                            count=len(changes[name]),
                        )
                    )
                    futures[pool.submit(check, service, stages[name], "full")] = service
                    continue
                outcome[name] = state_of
                if state_of == "live":
                    stages.pop(name, None)
                    result.activated.append(name)
                    remember([c.file for c in changes[name]])
                    if modes[name] == "incremental":
                        result.incremental.append(name)
                    result.live_alone.append(name)
            tlog.flush()
    finally:
        pool.shutdown(wait=True)
        tlog.flush()
    if errors:
        _remove_stages(conn, stages)
        name = next(s.name for s in todo if s.name in errors)
        exc = errors[name]
        live = [n for n in result.live_alone if n != name]
        note = f" ({', '.join(live)} already live: independent change)" if live else ""
        if isinstance(exc, CheckFailed):
            log(
                log_entry(
                    gettext_noop(
                        "%(service)s: check failed, live files untouched "
                        "(%(live)s already live: independent change)"
                    ),
                    service=exc.service,
                    live=", ".join(live),
                )
                if note
                else log_entry(
                    gettext_noop("%(service)s: check failed, live files untouched"),
                    service=exc.service,
                )
            )
            raise ConvergeError(str(exc), exc.output) from exc
        if isinstance(exc, CommandFailed):
            raise ConvergeError(f"{name}: {exc}{note}", exc.result.stderr) from exc
        if isinstance(exc, ConvergeError):
            raise exc
        raise exc
    for service in todo:
        name = service.name
        if outcome.get(name) == "live":
            continue
        incremental = modes[name] == "incremental"
        try:
            install_staged(
                conn,
                service,
                stages.pop(name),
                changes[name],
                log,
                incremental=incremental,
                tracking=tracking,
            )
        except CheckFailed as exc:
            _remove_stages(conn, stages)
            raise ConvergeError(str(exc), exc.output) from exc
        except CommandFailed as exc:
            _remove_stages(conn, stages)
            raise ConvergeError(f"{name}: {exc}", exc.result.stderr) from exc
        except BaseException:
            _remove_stages(conn, stages)
            raise
        result.activated.append(name)
        remember([c.file for c in changes[name]])
        if incremental:
            result.incremental.append(name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _remove_stages(conn: Connector, stages: dict[str, str]) -> None:
    for stage in stages.values():
        remove_quietly(conn, stage)
    stages.clear()


def prepare(
    conn: Connector, state: DesiredState, services: list[Service], result: ConvergeResult
) -> dict[str, Preparation]:
    """Plan every service's preparation step; the ones with commands, by service name.

    Reads facts only, so a dry run calls it too; ``result`` receives the planned commands
    (as shell lines) and each service's report.
    """
    planned: dict[str, Preparation] = {}
    for service in services:
        try:
            preparation = service.prepare(conn, state)
        except (PrepareFailed, CheckFailed) as exc:
            raise ConvergeError(str(exc), getattr(exc, "output", "")) from exc
        except CommandFailed as exc:
            raise ConvergeError(f"{service.name}: {exc}", exc.result.stderr) from exc
        if preparation is None:
            continue
        if preparation.report:
            result.reports[service.name] = preparation.report
        if preparation.commands:
            result.prepared[service.name] = [shlex.join(a) for a in preparation.commands]
            planned[service.name] = preparation
    return planned


#: How long the controller remembers what it installed on a node (sha256 per path).
RECORD_TIMEOUT = 30 * 24 * 3600


class InstalledRecord:
    """The sha256 of each managed file as the controller last installed or saw it on a node.

    The incremental path trusts a live file only when its sha256 (read by the hash
    compare anyway) is the one recorded here: a file edited on the node, or one we have
    no record of, gets the full path. Kept in the shared cache (Redis in production,
    like :mod:`deploy.dirty`'s flags); without a cache, nothing is trusted.
    """

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.previous: dict[str, str] = {}
        self.current: dict[str, str] = {}
        try:
            from django.core.cache import cache

            self.previous = dict(cache.get(self._key()) or {})
        except Exception:  # no Django or cache: trust nothing, stay correct
            self.previous = {}
        self.current = dict(self.previous)

    def _key(self) -> str:
        from django.conf import settings

        return f"ums:converge:{settings.DATABASES['default']['NAME']}:installed:{self.node_id}"

    def saw(self, path: str, digest: str) -> None:
        self.current[path] = digest

    def installed(self, files: list[ManagedFile]) -> None:
        for file in files:
            self.current[file.path] = sha256(file.content)

    def forget(self, paths: Iterable[str]) -> None:
        for path in paths:
            self.current.pop(path, None)

    def save(self) -> None:
        if self.current == self.previous:
            return
        try:
            from django.core.cache import cache

            cache.set(self._key(), self.current, timeout=RECORD_TIMEOUT)
        except Exception as exc:  # losing the record only costs a full path next time
            import logging

            logging.getLogger(__name__).warning("cannot save the installed-file record: %s", exc)


def converge(
    conn: Connector,
    state: DesiredState,
    *,
    dry_run: bool = False,
    services: Iterable[Service] | None = None,
    log: Log | None = None,
    fence: int | None = None,
) -> ConvergeResult:
    """Bring the node behind ``conn`` to ``state``; idempotent. Raises ConvergeError.

    ``fence`` is the converge's lease token: every install checks it against the node's
    fence and records it (:class:`Superseded` when the node saw a newer one).

    Settings that fail :func:`deploy.node_settings.problems` are refused before anything
    is read or rendered, with every reason. Each service with changes is installed,
    activated, probed (rolled back on failure) and recorded; a service without changes
    is reloaded and probed when the daemon runs an older configuration than its files
    (see :func:`reload_stale`).
    """
    from .node_settings import InvalidNodeSettings, validate

    log = log or (lambda line: None)
    try:
        validate(state.settings)
    except InvalidNodeSettings as exc:
        raise ConvergeError(str(exc)) from exc
    selected = applicable_services(state, services)
    result = ConvergeResult(dry_run=dry_run, services=[s.name for s in selected])
    fence_token(fence)  # a bad token fails here, before anything is read
    tracking = Tracking(state, fence=fence)
    try:
        tracking.run = read_run_state(conn, selected, clean=not dry_run)
    except CommandFailed as exc:
        raise ConvergeError(f"cannot read the node's converge state: {exc}") from exc
    preparations = prepare(conn, state, selected, result)
    record = None if dry_run else InstalledRecord(state.node.id)

    def reload_unchanged() -> None:
        for service in selected:
            if service.name in result.changed:
                continue
            try:
                reload_stale(conn, service, tracking, log, result)
            except CheckFailed as exc:
                raise ConvergeError(str(exc), exc.output) from exc
            except CommandFailed as exc:
                raise ConvergeError(f"{service.name}: {exc}", exc.result.stderr) from exc
        result.probed.update(tracking.probed)

    def plan_and_note(batch: list[Service]) -> dict[str, list[FileChange]]:
        unchanged: dict[str, str] = {}
        try:
            changes = plan(conn, state, batch, unchanged=unchanged, tracking=tracking)
        except CommandFailed as exc:
            raise ConvergeError(f"cannot read the node's files: {exc}") from exc
        for name, items in changes.items():
            result.changed[name] = [c.file.path for c in items]
        if record is not None:
            # Files already as rendered are what the controller saw there: trusted next
            # time. A changed file is untrusted until this converge installs it, so a
            # converge that fails midway never leaves a half-known file trusted.
            for path, digest in unchanged.items():
                record.saw(path, digest)
            record.forget(c.file.path for items in changes.values() for c in items)
        return changes

    # A pipeline: services are planned (rendered, hash-compared) one by one, slowest check
    # first, and each one's check starts on the node as soon as it is staged, while the
    # controller renders the next. The first service with changes is planned here, the
    # rest inside apply_services. A dry run plans everything up front.
    if dry_run:
        changes = plan_and_note(selected)
        pending: list[Service] = []
    else:
        pending = sorted(selected, key=lambda s: -s.check_cost)
        changes = {}
        while pending and not changes:
            changes = plan_and_note([pending.pop(0)])
    if not changes and not preparations:
        if record is not None:
            record.save()
        reload_unchanged()
        log(
            log_entry(gettext_noop("reloaded %(services)s"), services=", ".join(result.reloaded))
            if result.reloaded
            else log_entry(gettext_noop("no changes"))
        )
        return result
    if dry_run:
        for items in changes.values():
            for change in items:
                result.diffs[change.file.path] = _diff(conn, change)
        reload_unchanged()
        return result
    for service in selected:
        preparation = preparations.get(service.name)
        if preparation is None:
            continue
        try:
            service.apply_preparation(conn, preparation)
        except (PrepareFailed, CheckFailed) as exc:
            raise ConvergeError(str(exc), getattr(exc, "output", "")) from exc
        except CommandFailed as exc:
            raise ConvergeError(f"{service.name}: {exc}", exc.result.stderr) from exc
        log(
            log_entry(
                gettext_noop("%(service)s: ran %(count)s preparation command(s)"),
                service=service.name,
                count=len(preparation.commands),
            )
        )
    assert record is not None
    try:
        apply_services(
            conn,
            selected,
            changes,
            log,
            result,
            state=state,
            trusted=record.previous,
            installed=record.installed,
            more=[(lambda s=s: plan_and_note([s])) for s in pending],
            tracking=tracking,
        )
    finally:
        record.save()
        result.probed.update(tracking.probed)
    reload_unchanged()
    return result
