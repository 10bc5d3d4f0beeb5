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
   renamed into place, keeping the mode and owner set in the stage;
7. only services whose files changed are activated (maps compiled, daemons reloaded).

Nothing built from user data reaches a shell: commands are argument lists, and the two
small ``sh -c`` scripts below are constants that receive paths as ``"$@"``.
"""

from __future__ import annotations

import difflib
import posixpath
import secrets
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .connector.base import CommandFailed, Connector
from .services.base import (
    CheckFailed,
    DesiredState,
    ManagedFile,
    Preparation,
    PrepareFailed,
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


class ConvergeError(Exception):
    """Converge stopped; ``output`` holds what the checker or command printed."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


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
    return [s for s in services if s.applies_to_state(state)]


def render(service: Service, state: DesiredState) -> list[ManagedFile]:
    """Render and check each path lies inside the service's config root (it is staged)."""
    files = service.render(state)
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
    conn: Connector, state: DesiredState, services: list[Service]
) -> dict[str, list[FileChange]]:
    """Per service, the files that differ from the node (content, mode or owner)."""
    rendered = {service.name: render(service, state) for service in services}
    paths = [f.path for files in rendered.values() for f in files]
    facts = remote_facts(conn, paths)
    changes: dict[str, list[FileChange]] = {}
    for service in services:
        for file in rendered[service.name]:
            fact = facts.get(file.path)
            remote_meta, remote_sha = fact if fact else (None, None)
            if remote_sha == sha256(file.content) and remote_meta == _meta(file):
                continue
            changes.setdefault(service.name, []).append(
                FileChange(service.name, file, remote_sha, remote_meta)
            )
    return changes


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


def _stage(conn: Connector, service: Service) -> str:
    root = service.config_root.rstrip("/")
    stage = f"{root}/{STAGE_PREFIX}{secrets.token_hex(6)}"
    # A stage a crashed converge left behind would otherwise be copied into this one.
    conn.run(
        [
            "find",
            root,
            "-mindepth",
            "1",
            "-maxdepth",
            "1",
            "-name",
            STAGE_PREFIX + "*",
            "-exec",
            "rm",
            "-rf",
            "--",
            "{}",
            "+",
        ]
    ).check()
    conn.run(["mkdir", "-p", root]).check()
    conn.run(["mkdir", "-m", "700", stage]).check()
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
    return stage


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
        conn.run(["rm", "-rf", "--", stage])
        raise
    return stage


def install_staged(
    conn: Connector, service: Service, stage: str, changes: list[FileChange], log: Log
) -> list[ManagedFile]:
    """Rename the validated files (and what the checker compiled) into place; activate."""
    files = [c.file for c in changes]
    try:
        live = [*(f.path for f in files), *service.compiled_files(files)]
        live_parents = sorted({posixpath.dirname(p) for p in live})
        conn.run(["mkdir", "-p", "--", *live_parents]).check()
        sources = {f.path for f in files}
        for path in live:
            staged = _staged_path(service, stage, path)
            # A compiled file exists only if the checker built it.
            if path not in sources and conn.run(["test", "-e", staged]).exit_code != 0:
                continue
            # mv within one filesystem is rename(2): readers see old or new, never half.
            conn.run(["mv", "-f", "-T", "--", staged, path]).check()
        log(f"{service.name}: installed {', '.join(f.path for f in files)}")
    finally:
        conn.run(["rm", "-rf", "--", stage])
    service.activate(conn, files)
    log(f"{service.name}: activated")
    return files


def apply_service(
    conn: Connector, service: Service, changes: list[FileChange], log: Log
) -> list[ManagedFile]:
    """Stage, validate, install and activate one service's changed files."""
    stage = stage_files(conn, service, changes)
    try:
        log(f"{service.name}: validating {len(changes)} staged file(s)")
        service.validate(conn, stage)
    except BaseException:
        conn.run(["rm", "-rf", "--", stage])
        raise
    return install_staged(conn, service, stage, changes, log)


def apply_services(
    conn: Connector,
    services: list[Service],
    changes: dict[str, list[FileChange]],
    log: Log,
    result: ConvergeResult,
) -> None:
    """Stage every changed service, validate the stages at once, install in order.

    The checkers (``makeuserdb``, ``postmap`` of every map) are the slowest part of a
    converge and independent of each other: each runs in its own thread on its own
    SSH channel of the one connection. Uploads stay sequential (one SFTP session) and
    installation and activation keep the service order, so a service that relies on
    another's files (Postfix on the LDA's) still finds them live first. When any
    check fails nothing is installed: the stages are removed, the live files untouched.
    """
    todo = [s for s in services if changes.get(s.name)]
    stages: dict[str, str] = {}
    try:
        for service in todo:
            stages[service.name] = stage_files(conn, service, changes[service.name])
            log(f"{service.name}: validating {len(changes[service.name])} staged file(s)")
        validate_stages(conn, todo, stages)
    except CheckFailed as exc:
        log(f"{exc.service}: check failed, live files untouched")
        _remove_stages(conn, stages)
        raise ConvergeError(str(exc), exc.output) from exc
    except CommandFailed as exc:
        _remove_stages(conn, stages)
        raise ConvergeError(f"{exc}", exc.result.stderr) from exc
    except BaseException:
        _remove_stages(conn, stages)
        raise
    for service in todo:
        try:
            install_staged(conn, service, stages.pop(service.name), changes[service.name], log)
        except CheckFailed as exc:
            _remove_stages(conn, stages)
            raise ConvergeError(str(exc), exc.output) from exc
        except CommandFailed as exc:
            _remove_stages(conn, stages)
            raise ConvergeError(f"{service.name}: {exc}", exc.result.stderr) from exc
        except BaseException:
            _remove_stages(conn, stages)
            raise
        result.activated.append(service.name)


def validate_stages(conn: Connector, services: list[Service], stages: dict[str, str]) -> None:
    """Run every service's checker on its stage, concurrently; raise the first failure.

    paramiko opens each command's channel on the shared transport under its own lock,
    so threads may run commands on one connector; SFTP is not used from here.
    """
    from concurrent.futures import ThreadPoolExecutor

    if len(services) == 1:
        services[0].validate(conn, stages[services[0].name])
        return
    with ThreadPoolExecutor(max_workers=len(services)) as pool:
        futures = [pool.submit(s.validate, conn, stages[s.name]) for s in services]
        # Every check finishes before a failure is raised (the first in service order).
        errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error


def _remove_stages(conn: Connector, stages: dict[str, str]) -> None:
    for stage in stages.values():
        conn.run(["rm", "-rf", "--", stage])
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


def converge(
    conn: Connector,
    state: DesiredState,
    *,
    dry_run: bool = False,
    services: Iterable[Service] | None = None,
    log: Log | None = None,
) -> ConvergeResult:
    """Bring the node behind ``conn`` to ``state``; idempotent. Raises ConvergeError."""
    log = log or (lambda line: None)
    selected = applicable_services(state, services)
    result = ConvergeResult(dry_run=dry_run, services=[s.name for s in selected])
    preparations = prepare(conn, state, selected, result)
    try:
        changes = plan(conn, state, selected)
    except CommandFailed as exc:
        raise ConvergeError(f"cannot read the node's files: {exc}") from exc
    for name, items in changes.items():
        result.changed[name] = [c.file.path for c in items]
    if not changes and not preparations:
        log("no changes")
        return result
    if dry_run:
        for items in changes.values():
            for change in items:
                result.diffs[change.file.path] = _diff(conn, change)
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
        log(f"{service.name}: ran {len(preparation.commands)} preparation command(s)")
    apply_services(conn, selected, changes, log, result)
    return result
