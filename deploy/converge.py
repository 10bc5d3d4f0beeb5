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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .connector.base import CommandFailed, Connector
from .services.base import (
    CheckFailed,
    DesiredState,
    LiveFile,
    ManagedFile,
    NotIncremental,
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
    #: Services whose changes took the incremental path (e.g. Postfix's postmap -i).
    incremental: list[str] = field(default_factory=list)
    #: Services installed as soon as their own check passed (see apply_services).
    live_alone: list[str] = field(default_factory=list)

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
    conn: Connector,
    state: DesiredState,
    services: list[Service],
    *,
    unchanged: dict[str, str] | None = None,
) -> dict[str, list[FileChange]]:
    """Per service, the files that differ from the node (content, mode or owner).

    ``unchanged`` (optional) receives path -> sha256 of every file already as rendered.
    """
    rendered = {service.name: render(service, state) for service in services}
    paths = [f.path for files in rendered.values() for f in files]
    facts = remote_facts(conn, paths)
    changes: dict[str, list[FileChange]] = {}
    for service in services:
        for file in rendered[service.name]:
            fact = facts.get(file.path)
            remote_meta, remote_sha = fact if fact else (None, None)
            if remote_sha == sha256(file.content) and remote_meta == _meta(file):
                if unchanged is not None:
                    unchanged[file.path] = remote_sha
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


def _stage(conn: Connector, service: Service, *, copy: bool = True) -> str:
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
    if not copy:
        return stage
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
        conn.run(["rm", "-rf", "--", stage])
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
) -> list[ManagedFile]:
    """Rename the validated files (and what the checker compiled) into place; activate.

    Compiled files go first, their sources last: if the converge dies in between, the
    live source still differs from the render, so the next converge sees the change and
    compiles again (the other way round it would find the source current, and a stale
    compiled map would stay live).
    """
    files = [c.file for c in changes]
    try:
        sources = [f.path for f in files]
        live = [*service.compiled_files(files), *sources]
        live_parents = sorted({posixpath.dirname(p) for p in live})
        conn.run(["mkdir", "-p", "--", *live_parents]).check()
        args: list[str] = []
        for path in live:
            # A compiled file exists only if the checker built it.
            kind = "source" if path in sources else "compiled"
            args += [kind, _staged_path(service, stage, path), path]
        # One command for every rename (a round trip each was a tenth of a full converge).
        conn.run(["sh", "-c", _INSTALL_SCRIPT, "sh", *args]).check()
        log(f"{service.name}: installed {', '.join(f.path for f in files)}")
    finally:
        conn.run(["rm", "-rf", "--", stage])
    if incremental:
        service.activate_incremental(conn, files)
    else:
        service.activate(conn, files)
    log(f"{service.name}: activated")
    return files


# Arguments: (kind, staged path, live path) triples, in order. mv within one filesystem
# is rename(2): readers see the old file or the new one, never half of it. A compiled
# file the checker did not build is skipped; the first failure stops the rest.
_INSTALL_SCRIPT = r"""
while [ $# -ge 3 ]; do
  kind=$1; staged=$2; live=$3; shift 3
  if [ "$kind" = compiled ] && [ ! -e "$staged" ]; then continue; fi
  mv -f -T -- "$staged" "$live" || exit 1
done
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
        if mode == "incremental":
            live = [LiveFile(c.file, c.remote_sha256 or "") for c in items]
            try:
                service.validate_incremental(conn, stage, live)
            except (NotIncremental, CheckFailed, CommandFailed) as exc:
                conn.run(["rm", "-rf", "--", stage])
                tlog(f"{service.name}: incremental path not taken ({_first_line(exc)}); "
                     "falling back to the full check")  # fmt: skip
                return "fallback"
            tlog(f"{service.name}: incremental update built and verified in the stage")
        else:
            service.validate(conn, stage)
        if service.name not in alone:
            return "checked"
        install_staged(conn, service, stage, items, tlog, incremental=mode == "incremental")
        return "live"

    def submit(service: Service) -> None:
        items = changes[service.name]
        if _incremental_candidate(service, state, items, trusted):
            modes[service.name] = "incremental"
            stages[service.name] = light_stage(conn, service, items)
            log(f"{service.name}: trying the incremental path for {len(items)} file(s)")
        else:
            modes[service.name] = "full"
            stages[service.name] = stage_files(conn, service, items)
            log(f"{service.name}: validating {len(items)} staged file(s)")
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
                    log(f"{name}: validating {len(changes[name])} staged file(s)")
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
            log(f"{exc.service}: check failed, live files untouched{note}")
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
                conn, service, stages.pop(name), changes[name], log, incremental=incremental
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
) -> ConvergeResult:
    """Bring the node behind ``conn`` to ``state``; idempotent. Raises ConvergeError."""
    log = log or (lambda line: None)
    selected = applicable_services(state, services)
    result = ConvergeResult(dry_run=dry_run, services=[s.name for s in selected])
    preparations = prepare(conn, state, selected, result)
    record = None if dry_run else InstalledRecord(state.node.id)

    def plan_and_note(batch: list[Service]) -> dict[str, list[FileChange]]:
        unchanged: dict[str, str] = {}
        try:
            changes = plan(conn, state, batch, unchanged=unchanged)
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
        log("no changes")
        if record is not None:
            record.save()
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
        )
    finally:
        record.save()
    return result
