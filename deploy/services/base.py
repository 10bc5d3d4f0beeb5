"""The contract every service module implements, and the plain data it renders from.

A service never touches the database, views, serializers or forms: ``deploy.desired``
builds :class:`DesiredState` from the models, services turn it into :class:`ManagedFile`
lists, and ``deploy.converge`` compares, stages, validates, installs and reloads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class NodeView:
    """What a service may know about the node it renders for."""

    id: int
    hostname: str
    address: str
    roles: tuple[str, ...]
    os_family: str  # "debian" or "rhel"
    zone_id: int


@dataclass(frozen=True)
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

    def applies_to(self, node: NodeView) -> bool:
        return bool(self.roles & set(node.roles))

    @abstractmethod
    def render(self, state: DesiredState) -> list[ManagedFile]:
        """Pure: the files this service needs on ``state.node``."""

    @abstractmethod
    def validate(self, conn: Connector, staged_root: str) -> None:
        """Run the service's own checker on the staged tree; raise CheckFailed."""

    @abstractmethod
    def activate(self, conn: Connector, changed: list[ManagedFile]) -> None:
        """After the files are live: compile maps, reload. Called only when files changed."""

    def compiled_files(self, changed: list[ManagedFile]) -> list[str]:
        """Files ``validate`` built in the stage from ``changed`` (``main.db``, ``userdb.dat``).

        Absolute live paths. Converge renames them into place right after their sources,
        so a map compiled once by the checker goes live without compiling it again.
        Optional: the default is none.
        """
        return []
