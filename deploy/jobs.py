"""Job handlers for node work: verification after approval and the node action buttons."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from django.utils import timezone
from django.utils.translation import gettext_noop

from servers import actions as server_actions
from servers.choices import NodeStatus
from servers.models import Node
from ums import auditing, jobs
from ums.models import Job

from . import (
    controller_keys,
    lb_certificates,  # noqa: F401 (registers the lb.renew_certificates job)
    node_ops,
)
from .connector.base import (
    CommandTimeout,
    ConnectorError,
    PermanentConnectorError,
    TransientConnectorError,
)
from .connector.ssh import SSHConnector
from .models import ControllerKey
from .nodes import connector_for, session
from .rule_updates import jobs as rule_update_jobs  # noqa: F401 (registers node.update_rules)
from .services.base import CheckFailed

if TYPE_CHECKING:
    from .converge import ConvergeResult
    from .services.base import DesiredState, Service

logger = logging.getLogger(__name__)

# Attempts of one converge job when the SSH connection drops, and the pause between them.
_CONVERGE_ATTEMPTS = 2
_CONVERGE_RETRY_PAUSE = 1.0


def _node(job: Job) -> Node:
    node = Node.objects.filter(pk=job.params.get("node_id")).first()
    if node is None:
        raise jobs.PermanentJobError("the node no longer exists")
    return node


def _fail_on_connector_error(exc: ConnectorError) -> None:
    raise jobs.PermanentJobError(f"{type(exc).__name__}: {exc}") from exc


@jobs.handler("node.verify")
def verify(job: Job, reporter: jobs.Reporter) -> dict:
    """After approval: log in with the pinned key, read the node's facts, mark it active."""
    node = _node(job)
    reporter.progress(0, 2)
    try:
        with session(node) as conn:
            reporter.say(
                gettext_noop("connected to %(address)s:%(port)s"),
                address=node.ssh_address,
                port=node.ssh_port,
            )
            facts = node_ops.gather_facts(conn)
    except ConnectorError as exc:
        _fail_on_connector_error(exc)
    server_actions.record_facts(node, facts)
    reporter.say(
        gettext_noop("%(os)s, %(cpus)s CPUs, %(memory)s MB"),
        os=facts["os_pretty_name"],
        cpus=facts["cpus"],
        memory=facts["memory_mb"],
    )
    reporter.progress(1, 2)
    if node.controller_key_version is None:
        Node.objects.filter(pk=node.pk).update(
            controller_key_version=controller_keys.current().version, last_seen_at=timezone.now()
        )
    server_actions.set_status(node, NodeStatus.ACTIVE, reason="verified after approval")
    return {"facts": facts}


@jobs.handler("node.run", retriable=False)  # any command: may not be idempotent
def run_command(job: Job, reporter: jobs.Reporter) -> dict:
    """Run a fixed, controller-chosen argument list (never user text) and keep its output."""
    node = _node(job)
    argv = job.params["argv"]
    try:
        with session(node) as conn:
            result = conn.run(argv, timeout=job.params.get("timeout", 300))
    except ConnectorError as exc:
        _fail_on_connector_error(exc)
    reporter.say(
        gettext_noop("$ %(command)s -> exit %(code)s"),
        command=" ".join(argv),
        code=result.exit_code,
    )
    output = {
        "exit_code": result.exit_code,
        "stdout": result.stdout[-20000:],
        "stderr": result.stderr[-20000:],
    }
    if not result.ok:
        raise jobs.PermanentJobError(result.stderr.strip()[-2000:] or f"exit {result.exit_code}")
    return output


def _daemon_action(job: Job, reporter: jobs.Reporter, verb: str) -> dict:
    """Run node_daemons.<verb> on the job's node; log what stopped and started."""
    from . import node_daemons

    node = _node(job)
    try:
        with session(node) as conn:
            result = getattr(node_daemons, verb)(conn, node)
    except ConnectorError as exc:
        _fail_on_connector_error(exc)
    if result.get("systemd"):
        reporter.say(
            gettext_noop("reboot requested")
            if verb == "reboot"
            else gettext_noop("power-off requested")
        )
        return result
    _report_daemons(reporter, result)
    if result.get("failed"):
        raise jobs.PermanentJobError(_failed_text(result["failed"]))
    return result


@jobs.handler("node.reboot", retriable=False)  # twice would reboot twice
def reboot(job: Job, reporter: jobs.Reporter) -> dict:
    """systemd: the machine reboots. Otherwise the controller is the node's init: every
    managed daemon is stopped and started again from its live files (node_daemons)."""
    return _daemon_action(job, reporter, "reboot")


@jobs.handler("node.shutdown", retriable=False)
def shutdown(job: Job, reporter: jobs.Reporter) -> dict:
    return _daemon_action(job, reporter, "shutdown")


@jobs.handler("node.start_services")
def start_services(job: Job, reporter: jobs.Reporter) -> dict:
    """Start every managed daemon that is not running, from the files live on the node
    (after a shutdown, or a node whose processes all died). Idempotent."""
    return _daemon_action(job, reporter, "boot")


def _report_daemons(reporter: jobs.Reporter, result: dict) -> None:
    for name, pids in result.get("stopped", {}).items():
        reporter.say(
            gettext_noop("stopped %(service)s (pids %(pids)s)"),
            service=name,
            pids=" ".join(map(str, pids)) or "-",
        )
    for name, pids in result.get("started", {}).items():
        reporter.say(
            gettext_noop("started %(service)s (pids %(pids)s)"),
            service=name,
            pids=" ".join(map(str, pids)) or "-",
        )


def _failed_text(failed: dict[str, str]) -> str:
    return "\n".join(f"{name}: {reason}" for name, reason in failed.items())[-2000:]


@jobs.handler("node.restart_service")
def restart_service(job: Job, reporter: jobs.Reporter) -> dict:
    """A service converge manages on a node without systemd: stopped and started from its
    live files by the controller; any other name: the node's systemctl/service."""
    from . import node_daemons

    node = _node(job)
    name = job.params["service"]
    try:
        with session(node) as conn:
            result = node_daemons.restart(conn, node, name)
    except CheckFailed as exc:  # the daemon did not start again: say why
        raise jobs.PermanentJobError(exc.output[-2000:] or str(exc)) from exc
    except ConnectorError as exc:
        _fail_on_connector_error(exc)
    if "exit_code" not in result:
        _report_daemons(
            reporter,
            {"stopped": {name: result["stopped"]}, "started": {name: result["started"]}},
        )
        return result
    reporter.say(
        gettext_noop("restart %(service)s: exit %(code)s"), service=name, code=result["exit_code"]
    )
    if result["exit_code"] != 0:
        raise jobs.PermanentJobError(
            (result["stderr"] or result["stdout"]).strip()[-2000:] or f"exit {result['exit_code']}"
        )
    return result


@jobs.handler("node.storage_start")
def storage_start(job: Job, reporter: jobs.Reporter) -> dict:
    return _storage(job, reporter)


@jobs.handler("node.storage_stop")
def storage_stop(job: Job, reporter: jobs.Reporter) -> dict:
    return _storage(job, reporter)


def _storage(job: Job, reporter: jobs.Reporter) -> dict:
    """Bring the node's storage to what was requested *last* (``Node.storage_requested``),
    whichever action queued this job: a stale job never undoes a newer request. Holds the
    node's converge lease, so no converge mounts or restarts anything meanwhile.
    Idempotent: the reconciler (deploy/storage_reconcile.py) runs it again until
    ``storage_applied`` agrees."""
    from . import dirty, node_storage

    node = _node(job)
    wanted = node.storage_requested
    lease = dirty.acquire(node.pk, owner=f"job:{job.pk}")
    if lease is None and (dead := dirty.holder_is_dead(node.pk)) is not None:
        lease = dirty.acquire(node.pk, owner=f"job:{job.pk}", steal=dead)
    if lease is None:
        raise jobs.PermanentJobError(
            "A converge of this node is running; storage is handled after it."
        )
    reporter.on_heartbeat(lease.renew)
    try:
        with session(node) as conn:
            verb = node_storage.stop if wanted == node_storage.STOPPED else node_storage.start
            result = verb(conn, node)
    except (ConnectorError, node_storage.StorageError) as exc:
        Node.objects.filter(pk=node.pk).update(storage_error=f"{type(exc).__name__}: {exc}")
        raise jobs.PermanentJobError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        dirty.release(lease)
    for name in result.get("unmounted", []):
        reporter.say(gettext_noop("unmounted %(dataset)s"), dataset=name)
    for name in result.get("mounted", []):
        reporter.say(gettext_noop("mounted %(dataset)s"), dataset=name)
    _report_daemons(reporter, result)
    if result.get("failed"):
        reason = _failed_text(result["failed"])
        Node.objects.filter(pk=node.pk).update(storage_error=reason)
        raise jobs.PermanentJobError(reason)
    Node.objects.filter(pk=node.pk, storage_requested=wanted).update(
        storage_applied=wanted, storage_error=""
    )
    if wanted == node_storage.RUNNING and dirty.is_dirty(node.pk):
        # Changes that waited while the storage was stopped (converge refuses then).
        dirty.ensure_queued([node.pk], reason="storage started")
    return {"storage": wanted, **result}


# Not retried: a run that died after removing the old key but before recording the new
# version would log in with the removed key and fail with a misleading reason.
@jobs.handler("node.rotate_key", retriable=False)
def rotate_key(job: Job, reporter: jobs.Reporter) -> dict:
    """Move the node to a new controller key: add it, prove it works, remove the old one."""
    node = _node(job)
    old = controller_keys.by_version(node.controller_key_version)
    new = controller_keys.current()
    if new.version == old.version:
        new = controller_keys.create_next()
    reporter.progress(0, 3)
    try:
        with session(node) as conn:
            node_ops.add_authorized_key(conn, new.public_key)
        reporter.say(
            gettext_noop("installed controller key v%(version)s (%(fingerprint)s)"),
            version=new.version,
            fingerprint=new.fingerprint,
        )
        reporter.progress(1, 3)
        probe = connector_for(node)
        with SSHConnector(
            probe.host,
            probe.port,
            pkey=controller_keys.private_key(new),
            known_host_keys=node.pinned_host_keys,
            connect_timeout=probe.connect_timeout,
            retries=probe.retries,
        ) as conn:
            conn.run(["true"]).check()
            removed = node_ops.remove_authorized_keys(conn, [old.public_key])
    except ConnectorError as exc:
        _fail_on_connector_error(exc)
    reporter.say(
        gettext_noop("login with v%(version)s works; removed %(count)s old key line(s)"),
        version=new.version,
        count=removed,
    )
    Node.objects.filter(pk=node.pk).update(controller_key_version=new.version)
    auditing.record(
        "node.key_rotated",
        obj=node,
        before={"controller_key_version": old.version},
        after={"controller_key_version": new.version},
    )
    return {"old_version": old.version, "new_version": new.version}


@jobs.handler("node.decommission")
def decommission(job: Job, reporter: jobs.Reporter) -> dict:
    """Remove the controller's keys from the node; keep its history in the database."""
    node = _node(job)
    removed = 0
    keys = [k.public_key for k in ControllerKey.objects.all()]
    try:
        with session(node) as conn:
            removed = node_ops.remove_authorized_keys(conn, keys)
        reporter.say(
            gettext_noop("removed %(count)s controller key line(s) from the node"), count=removed
        )
    except PermanentConnectorError as exc:
        raise jobs.PermanentJobError(f"{type(exc).__name__}: {exc}") from exc
    except ConnectorError as exc:
        # An unreachable node can still be decommissioned; say so in the log.
        reporter.say(gettext_noop("node unreachable, keys not removed: %(error)s"), error=str(exc))
    server_actions.set_status(node, NodeStatus.DECOMMISSIONED, reason="decommissioned")
    return {"keys_removed": removed}


# --------------------------------------------------------------------------- converge


def _converge_over_ssh(
    node: Node,
    state: DesiredState,
    services: list[Service],
    dry_run: bool,
    reporter: jobs.Reporter,
    fence: int | None = None,
) -> tuple[list[str], ConvergeResult]:
    """One attempt: install the packages the roles need, then converge the files
    (every install fenced with ``fence``, the converge's lease token)."""
    from . import converge, desired, packages

    with session(node) as conn:
        if not node.os_id:
            server_actions.record_facts(node, node_ops.gather_facts(conn))
            node.refresh_from_db()
        family = desired.os_family(node.os_id)
        installed = packages.ensure(
            conn, family, packages.wanted(services, family), dry_run=dry_run
        )
        if installed:
            reporter.say(
                gettext_noop("would install packages: %(packages)s")
                if dry_run
                else gettext_noop("installed packages: %(packages)s"),
                packages=", ".join(installed),
            )
        result = converge.converge(
            conn, state, dry_run=dry_run, services=services, log=reporter.log, fence=fence
        )
    return installed, result


@jobs.handler("node.converge")
def converge_node(job: Job, reporter: jobs.Reporter) -> dict:
    """Converge one node (or, with ``dry_run``, report the diff without applying it).

    With ``verify`` (after approval) the node's facts are read and it is marked active
    first; every real converge installs the packages its roles need. A real converge
    holds the node's lease (one per node at a time, renewed by the job's heartbeat) and
    records its generation as applied only when it succeeded: see :mod:`deploy.dirty`.
    Safe to run again after a dead worker: converge reads the node before it acts.
    """
    from . import dirty

    node = _node(job)
    dry_run = bool(job.params.get("dry_run"))
    if job.params.get("verify"):
        verify(job, reporter)
        node.refresh_from_db()
    if dry_run:
        return _converge(node, dry_run=True, reporter=reporter)
    lease = dirty.acquire(node.pk, owner=f"job:{job.pk}")
    if lease is None and (dead := dirty.holder_is_dead(node.pk)) is not None:
        reporter.say(gettext_noop("the converge holding this node's lease is dead; taking over"))
        lease = dirty.acquire(node.pk, owner=f"job:{job.pk}", steal=dead)
    if lease is None:
        # The holder read the desired generation at its start; it (or, if it dies, the
        # reconciler once its lease lapses) converges again for what came after.
        holder = dirty.lease_owner(node.pk) or "?"
        reporter.say(
            gettext_noop(
                "another converge of this node is running (%(holder)s); coalesced into it"
            ),
            holder=holder,
        )
        return {"coalesced": True, "into": holder}
    if Node.objects.filter(pk=node.pk, storage_requested="stopped").exists():
        # Converge would mount the datasets and start Courier and Postfix again; the
        # node stays dirty and converges once storage start succeeded (it queues one).
        reason = "storage is stopped on this node; converge waits for storage start"
        dirty.failed(lease, reason)
        raise jobs.PermanentJobError(reason)
    reporter.on_heartbeat(lease.renew)
    reporter.say(
        gettext_noop("converging generation %(generation)s (lease %(lease)s)"),
        generation=lease.generation,
        lease=lease.token,
    )
    try:
        _express(node, dirty.take_new_mailboxes(node.pk), reporter)
        result = _converge(node, dry_run=False, reporter=reporter, fence=lease.token)
    except Exception as exc:
        failures = dirty.failed(lease, jobs.human_error(exc))
        if failures:
            delay = int(dirty.retry_delay(failures).total_seconds())
            reporter.say(
                gettext_noop("failure %(failures)s in a row; the node is retried in %(delay)s s"),
                failures=failures,
                delay=delay,
            )
        _catch_up_with_fence(node, exc, reporter)
        raise
    except BaseException:
        dirty.release(lease)  # the worker is shutting down: the next run may start at once
        raise
    if not dirty.succeeded(lease):
        reporter.say(gettext_noop("a newer converge took this node over; its outcome stands"))
        return {**result, "superseded": True}
    if dirty.is_dirty(node.pk):
        dirty.ensure_queued([node.pk], reason="changed during converge")
    return result


def _catch_up_with_fence(node: Node, exc: BaseException, reporter: jobs.Reporter) -> None:
    """A refusal by a token this database never issued (a restored database, a node row
    enrolled again over a configured machine) would refuse every converge for good: the
    node's token sequence moves past it, so the retry goes through."""
    from . import converge, dirty

    refusal = exc if isinstance(exc, converge.Superseded) else exc.__cause__
    if isinstance(refusal, converge.Superseded) and dirty.catch_up(node.pk, refusal.seen):
        reporter.say(
            gettext_noop(
                "the node's fence (%(seen)s) is ahead of every converge token this "
                "database issued; the next converge starts past it"
            ),
            seen=refusal.seen,
        )


def _converge(
    node: Node, *, dry_run: bool, reporter: jobs.Reporter, fence: int | None = None
) -> dict:
    """Build the desired state and converge the node (a dry run: the diff only).

    ``fence`` (the lease token of a real converge) goes to every install on the node,
    which refuses it when a newer converge already installed there (see
    :func:`deploy.converge.install_staged`): the database outcome is fenced by
    :mod:`deploy.dirty`, the node's files by the node itself.
    """
    from . import converge, desired, packages

    state = desired.build(node)
    services = converge.applicable_services(state)
    reporter.say(
        gettext_noop("%(domains)s domain(s), %(mailboxes)s mailbox(es); services: %(services)s")
        if services
        else gettext_noop("%(domains)s domain(s), %(mailboxes)s mailbox(es); no services"),
        domains=len(state.domains),
        mailboxes=len(state.mailboxes),
        services=", ".join(s.name for s in services),
    )
    attempt = 1
    while True:
        try:
            installed, result = _converge_over_ssh(node, state, services, dry_run, reporter, fence)
            break
        except TransientConnectorError as exc:
            # A converge is idempotent, so after a dropped connection one more run
            # from the start is safe; a timeout is not retried (it would just recur).
            if attempt >= _CONVERGE_ATTEMPTS or isinstance(exc, CommandTimeout):
                _fail_on_connector_error(exc)
            reporter.say(gettext_noop("%(error)s; converging again from the start"), error=str(exc))
            attempt += 1
            time.sleep(_CONVERGE_RETRY_PAUSE)
        except ConnectorError as exc:
            _fail_on_connector_error(exc)
        except packages.PackageInstallFailed as exc:
            raise jobs.PermanentJobError(f"{exc}\n{exc.output}") from exc
        except converge.Superseded as exc:
            reporter.say(
                gettext_noop("%(error)s; its outcome stands, nothing was installed by this one"),
                error=str(exc),
            )
            raise jobs.PermanentJobError(str(exc)) from exc
        except converge.ConvergeError as exc:
            raise jobs.PermanentJobError(f"{exc}\n{exc.output}".strip()) from exc
    for name, paths in result.changed.items():
        reporter.say(
            gettext_noop("%(service)s: would change %(paths)s")
            if dry_run
            else gettext_noop("%(service)s: changed %(paths)s"),
            service=name,
            paths=", ".join(paths),
        )
    if not dry_run:
        auditing.record(
            "node.converged",
            obj=node,
            extra={"changed": result.changed, "packages": installed},
        )
        if "imap" in (node.roles or ()) and result.changed:
            _retry_relayed(node, reporter)
        _after_converge(node, state, reporter)
    return {**result.as_dict(), "packages": installed}


def _after_converge(node: Node, state: DesiredState, reporter: jobs.Reporter) -> None:
    """Run :data:`deploy.desired.CONVERGED_HOOKS`. Never fails the converge (the node is
    converged): a hook that fails is logged and recorded again by the next converge."""
    from . import desired

    for hook in desired.CONVERGED_HOOKS:
        try:
            hook(node, state)
        except Exception as exc:
            logger.exception("after-converge hook %s on %s failed", hook, node.hostname)
            reporter.say(gettext_noop("recording the outcome failed: %(error)s"), error=str(exc))


def _express(node: Node, mailbox_ids: list[int], reporter: jobs.Reporter) -> None:
    """New mailboxes' addresses live before the converge proper (see deploy.express).

    Never fails the converge: whatever goes wrong, the converge adds the entries anyway.
    Not fenced (the install's fence does not cover it): it only adds entries, for
    mailboxes that exist in the database the moment it runs, never removes or replaces
    a file, and any later change (a deletion) bumps the node and converges it again. A
    stale converge's express step therefore cannot undo a newer converge's outcome; at
    worst, a mailbox deleted between its read and its write here keeps a relay entry
    (mail to it deferred, never delivered) until the node's next converge.
    """
    from . import express

    if not mailbox_ids:
        return
    try:
        express.add_new_recipients(node, mailbox_ids, reporter.log)
    except Exception as exc:
        logger.exception("express step on %s failed", node.hostname)
        reporter.say(
            gettext_noop("express: failed (%(error)s); the converge adds the new mailboxes"),
            error=str(exc),
        )


def _retry_relayed(node: Node, reporter: jobs.Reporter) -> None:
    """Mail this IMAP node deferred is re-queued on the SMTP nodes relaying to it
    (see deploy.relay_retry). Best effort: Postfix's own retry comes anyway."""
    from . import relay_retry

    try:
        relay_retry.retry_deferred(node, reporter.log)
    except Exception as exc:
        logger.exception("re-queueing deferred mail for %s failed", node.hostname)
        reporter.say(
            gettext_noop("deferred mail not re-queued (%(error)s); Postfix retries it later"),
            error=str(exc),
        )


@jobs.handler("node.converge_dry_run")
def converge_dry_run(job: Job, reporter: jobs.Reporter) -> dict:
    """The "Show changes" button: a converge that only reports the diff per file."""
    job.params = {**job.params, "dry_run": True}
    return converge_node(job, reporter)
