"""The contract every service module implements, and the plain data it renders from.

A service never touches the database, views, serializers or forms: ``deploy.desired``
builds :class:`DesiredState` from the models, services turn it into :class:`ManagedFile`
lists, and ``deploy.converge`` compares, stages, validates, installs and reloads.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from deploy.connector.base import Connector


@dataclass(frozen=True)
class ManagedFile:
    """A file the controller owns on a node: rendered locally, installed atomically."""

    path: str  # absolute path on the node
    content: bytes
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"


class CheckFailed(Exception):
    """The service's own checker refused the staged configuration; live files untouched."""

    def __init__(self, service: str, output: str) -> None:
        super().__init__(f"{service}: configuration check failed:\n{output}")
        self.service = service
        self.output = output


class ProbeFailed(Exception):
    """After install and reload the running daemon does not serve as it should; converge
    puts the previous files back. ``output`` says what the probe saw."""

    def __init__(self, service: str, output: str) -> None:
        super().__init__(f"{service}: post-flight probe failed: {output}")
        self.service = service
        self.output = output


@dataclass(frozen=True)
class NodeView:
    """What a service may know about the node it renders for."""

    id: int
    hostname: str
    address: str
    roles: tuple[str, ...]
    os_family: str  # "debian" or "rhel"
    zone_id: int


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and building
# 100,000 of them took 0.22 s of every converge (0.03 s with slots). Treat as read-only.
@dataclass(slots=True)
class MailboxData:
    email: str  # ASCII (IDNA domain), validated
    local_part: str
    domain: str
    password_hash: str  # $6$ SHA512-CRYPT
    quota_mb: int
    enabled: bool
    read_only: bool
    can_delete: bool
    can_send: bool
    retention_days: int
    forward_to: tuple[str, ...]
    forward_keep_copy: bool
    protocols: dict[str, bool]  # effective access per protocol key, e.g. {"imaps": True}
    sieve_script: str | None = None
    autoresponder: dict | None = None


@dataclass(frozen=True)
class AliasData:
    email: str
    targets: tuple[str, ...]
    enabled: bool


@dataclass(frozen=True)
class DomainData:
    name: str  # IDNA
    enabled: bool
    catch_all: str
    aliases: tuple[str, ...]  # alias domain names
    quota_mb: int | None  # allocation for the domain's mail store dataset, if known
    policy: dict  # effective filtering policy (blocked extensions, scores, antivirus...)
    dkim_selector: str | None = None
    dkim_private_key: str | None = None
    # The IMAP node the domain is placed on (deploy.placement); None when unknown, e.g. in
    # a state built by hand: services then treat the domain as held by every IMAP node.
    node_id: int | None = None
    node_address: str | None = None


@dataclass(frozen=True)
class WebmailDomain:
    """A domain as the webmail node sees it (deploy.webmail builds these)."""

    name: str  # IDNA
    product_name: str  # the domain's own webmail name, "" for the default
    book: int | None  # the customer whose global address book its users see


@dataclass
class WebmailData:
    """What Roundcube on a webmail node needs beyond domains and mailboxes."""

    product_name: str  # the deployment's default product name
    des_key: str  # Roundcube's session encryption key, the same on every webmail node
    domains: list[WebmailDomain] = field(default_factory=list)
    # Customer id -> its global address book: [{"id", "kind", "email", "name"}], by address.
    books: dict[int, list[dict[str, str]]] = field(default_factory=dict)
    # Address -> base32 TOTP seed of mailboxes with two-factor webmail login.
    totp: dict[str, str] = field(default_factory=dict)


@dataclass
class DavGroupData:
    """One customer's CalDAV/CardDAV group on cloud-files nodes (deploy.dav_state).

    Mailboxes of ``domains`` (the customer's own domains) read the customer's global
    address book ``vcards`` (its whole subtree, vCard 4); ``calendar_sharers`` are the
    members whose calendar the others of the group may read (policy flag
    ``dav_sharing``).
    """

    customer_id: int
    name: str
    domains: tuple[str, ...]
    vcards: str
    calendar_sharers: tuple[str, ...] = ()


@dataclass
class DesiredState:
    """Everything the services render from, for one node."""

    node: NodeView
    domains: list[DomainData] = field(default_factory=list)
    mailboxes: list[MailboxData] = field(default_factory=list)
    aliases: list[AliasData] = field(default_factory=list)
    # Nodes by role, for upstreams and relays: role -> [(hostname, address)]
    nodes_by_role: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)  # TLS versions, mail store options...
    webmail: WebmailData | None = None  # webmail nodes only
    #: Data of services outside mail, filled by apps ``deploy`` may not import (see
    #: ``deploy.desired.STATE_BUILDERS``): e.g. ``"nextcloud"`` -> NextcloudData.
    extra: dict = field(default_factory=dict)
    # Cloud-files nodes only: the CalDAV/CardDAV groups per customer (deploy.dav_state).
    dav_groups: list[DavGroupData] = field(default_factory=list)


class NotIncremental(Exception):
    """The incremental path does not fit after all; converge takes the full path instead.

    Raised by :meth:`Service.validate_incremental` (a live file changed behind the
    controller's back, a map the quick diff cannot express, a lookup that does not
    answer as expected...). Nothing live was touched: the full path then stages, checks
    and compiles everything as usual.
    """


@dataclass(frozen=True)
class LiveFile:
    """A changed file for the incremental path: its new content and the live sha256 the
    hash compare read (the node must still have exactly that before anything is applied)."""

    file: ManagedFile
    live_sha256: str


class PrepareFailed(RuntimeError):
    """A service's preparation step cannot be planned or one of its commands failed."""


@dataclass
class Preparation:
    """Node changes that are not files (datasets, ...), planned from the node's facts.

    Converge runs every service's preparation before it installs any file, so that e.g.
    the mail store datasets exist before Courier creates Maildirs in them. ``commands``
    empty means nothing to do; a dry run shows them as shell lines without running them.
    ``report`` is shown in the converge result whether or not anything changes (for the
    operator: orphaned datasets, why a node uses plain directories, ...).
    """

    commands: list[list[str]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    #: Whatever the service needs to carry from ``prepare`` to ``apply_preparation``.
    data: dict[str, Any] = field(default_factory=dict)


class Service(ABC):
    """One daemon's configuration on a node."""

    #: Short name: "postfix", "courier", "nginx", "zfs", "spamassassin", "clamav".
    name: str = ""
    #: Node roles that need this service.
    roles: frozenset[str] = frozenset()
    #: Packages per OS family ("debian", "rhel"), installed idempotently by converge.
    packages: dict[str, tuple[str, ...]] = {}
    #: The directory whose whole staged copy the checker validates (e.g. "/etc/postfix").
    config_root: str = ""
    #: How slow the checker is, relatively: converge plans and starts the slowest checks
    #: first, so they run on the node while the controller renders the rest. Install
    #: order stays the registry's.
    check_cost: int = 0

    def applies_to(self, node: NodeView) -> bool:
        return bool(self.roles & set(node.roles))

    def config_root_for(self, node: NodeView) -> str:
        """The config root on ``node``; one per class unless the OS moves it (clamd)."""
        return self.config_root

    def for_node(self, node: NodeView) -> Service:
        """This service with ``config_root`` resolved for ``node``.

        The engine (staging, state and fence files, the inside-the-root check) reads
        ``config_root``; a service whose root differs by OS gets a copy bound to the
        node, so every step of one converge agrees on the same directory.
        """
        root = self.config_root_for(node)
        if root == self.config_root:
            return self
        bound = copy.copy(self)
        bound.config_root = root
        return bound

    def applies_to_state(self, state: DesiredState) -> bool:
        """Whether converge manages this service for ``state``; by default by role only.

        A service that is optional per deployment (the ZFS mail store) also looks at the
        settings, so nodes of a deployment that does not use it get neither its packages
        nor its steps.
        """
        return self.applies_to(state.node)

    @abstractmethod
    def render(self, state: DesiredState) -> list[ManagedFile]:
        """Pure: the files this service needs on ``state.node``."""

    @abstractmethod
    def validate(self, conn: Connector, staged_root: str) -> None:
        """Run the service's own checker on the staged tree; raise CheckFailed."""

    @abstractmethod
    def activate(self, conn: Connector, changed: list[ManagedFile]) -> None:
        """After the files are live: compile maps, reload. Called only when files changed."""

    def probe(self, conn: Connector, state: DesiredState, *, strict: bool = True) -> str:
        """After install and reload: does the running daemon serve the new configuration?

        Checks what the daemon's own checker cannot (Postfix: an SMTP ``RCPT`` to a known
        address answered without a 4xx). Returns what it saw, for the log ("" when the
        service has no probe, the default); raises :class:`ProbeFailed` with the reason,
        and converge then rolls the service back to its previous files. ``strict`` False
        (the probe after a rollback) checks only that the daemon answers sanely: the
        previous files may not know what ``state`` adds (a new mailbox).
        """
        return ""

    def compiled_files(self, changed: list[ManagedFile]) -> list[str]:
        """Files ``validate`` built in the stage from ``changed`` (``main.db``, ``userdb.dat``).

        Absolute live paths. Converge renames them into place right after their sources,
        so a map compiled once by the checker goes live without compiling it again.
        Optional: the default is none.
        """
        return []

    # ------------------------------------------------------------ incremental path
    # Optional. A service may bring some changes live without recompiling everything
    # (Postfix: map-only changes with postmap -i / -d). Converge only offers it when every
    # changed file exists on the node with the sha256 the controller last installed and
    # the same mode and owner; on NotIncremental (or any error) it takes the full path.

    def incremental_ok(self, state: DesiredState, changed: list[ManagedFile]) -> bool:
        """Whether these changes may try :meth:`validate_incremental`; default: never."""
        return False

    def validate_incremental(self, conn: Connector, stage: str, changed: list[LiveFile]) -> None:
        """Build and verify, in ``stage``, what goes live for ``changed`` (the new files are
        uploaded there, nothing else); leave live files alone. Raise NotIncremental when
        the full path must be taken instead. Install then renames the staged files and
        :meth:`compiled_files` into place, as for the full path."""
        raise NotIncremental(f"{self.name}: no incremental path")

    def activate_incremental(self, conn: Connector, changed: list[ManagedFile]) -> None:
        """After an incremental install; by default the same as :meth:`activate`."""
        self.activate(conn, changed)

    def goes_live_alone(self, state: DesiredState, changed: list[ManagedFile]) -> bool:
        """Whether these changes may go live as soon as this service's own check passed,
        before (or without) the other services' checks and regardless of service order.

        Only for changes nothing else depends on and that depend on no other service's
        new files (Postfix: address maps on a node that relays rather than delivers).
        Default: no, the service waits for every check and installs in service order.
        """
        return False

    def may_go_live_alone(self, state: DesiredState) -> bool:
        """Whether some change of this service could :meth:`goes_live_alone` on this node.

        Used by :mod:`deploy.express`: only such a node gets a new mailbox's entries before
        its converge. Default: no.
        """
        return False

    # ------------------------------------------------------------ daemon control
    # Node actions (restart, reboot, shutdown) on nodes without systemd, where nothing
    # but the controller starts our daemons: see deploy/node_daemons.py.

    #: Other names an administrator may give this service in "restart a service"
    #: (the systemd unit or init script names), besides ``name``.
    unit_names: tuple[str, ...] = ()

    def pidfiles(self, conn: Connector) -> list[str]:
        """The pid files of this service's daemons on the node (default: none)."""
        return []

    def start(self, conn: Connector) -> None:
        """Start the daemons with the configuration live on the node (what converge
        installed last). ``activate`` with nothing changed does exactly that: it starts
        a daemon that is not running and leaves a running one alone."""
        self.activate(conn, [])

    def stop(self, conn: Connector) -> list[int]:
        """Stop the daemons; returns the pids stopped. Default: by :meth:`pidfiles`."""
        from .daemon import stop_pidfiles

        return stop_pidfiles(conn, self.pidfiles(conn))

    def prepare(self, conn: Connector, state: DesiredState) -> Preparation | None:
        """Optional: read facts and plan non-file changes (see :class:`Preparation`).

        Must not change the node: a dry run calls it too. ``None`` (the default) means
        the service has no such step.
        """
        return None

    def apply_preparation(self, conn: Connector, preparation: Preparation) -> None:
        """Run what :meth:`prepare` planned; called only when it planned commands."""
        for argv in preparation.commands:
            result = conn.run(argv, timeout=600)
            if not result.ok:
                raise PrepareFailed(
                    f"{self.name}: {' '.join(argv)} failed: "
                    f"{(result.stderr or result.stdout).strip()}"
                )
