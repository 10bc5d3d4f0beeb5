"""LDAPS sign-in per customer: django-auth-ldap configured at run time from the customer's
:class:`~tenants.models_identity.LdapDirectory`.

A directory serves the usernames of its login domains: ``alice@corp.example`` is looked up as
``alice`` in the directory whose ``login_domains`` contain ``corp.example``, and becomes (or
is) the UMS administrator ``alice@corp.example`` of that customer's subtree, never anyone
outside it. Only encrypted connections are made (``ldaps://`` or StartTLS, certificate always
verified, TLS 1.2 at least). Permissions follow the directory groups at every login.

python-ldap builds from source (it needs libldap2-dev and libsasl2-dev), so LDAP support is
the optional extra ``ums[ldap]``: without it this backend still loads and tells a directory
user plainly that directory login is not installed, and everyone else logs in as usual.
"""

from __future__ import annotations

import hashlib
import logging
import os
import types
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest

from ums import auditing

from ..auth import AdministratorBackend
from ..models import Administrator
from ..models_identity import LdapDirectory

logger = logging.getLogger(__name__)

try:  # The optional extra: see the module docstring.
    import ldap
    from django_auth_ldap.backend import LDAPBackend, ldap_error, populate_user
    from django_auth_ldap.config import (
        GroupOfNamesType,
        LDAPSearch,
        LDAPSettings,
        PosixGroupType,
    )

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised only on installs without the extra
    ldap = None
    LDAPBackend = object  # type: ignore[misc,assignment]
    AVAILABLE = False

PROBLEM_UNREACHABLE = "unreachable"
PROBLEM_ERROR = "error"
PROBLEM_UNAVAILABLE = "unavailable"
FULL_NAME_MAX = 150


class DirectoryAccountConflict(PermissionDenied):
    """The directory user's UMS username belongs to an administrator outside the subtree."""


def split_username(username: str) -> tuple[str, str] | None:
    if not username or username.count("@") != 1:
        return None
    local, domain = username.strip().rsplit("@", 1)
    if not local or not domain:
        return None
    return local, domain.lower().rstrip(".")


def directory_for(username: str) -> LdapDirectory | None:
    parts = split_username(username)
    if parts is None:
        return None
    domain = parts[1]
    # A handful of rows at most: compared in Python.
    for directory in LdapDirectory.objects.filter(enabled=True).select_related("customer"):
        if domain in (directory.login_domains or []):
            return directory
    return None


def ca_file(pem: str) -> str:
    """The CA bundle as a file for libldap (it takes a path), named by its hash."""
    folder = Path(settings.VAR_DIR) / "ldap-ca"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (hashlib.sha256(pem.encode()).hexdigest() + ".pem")
    if not path.exists():
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(pem)
        temporary.replace(path)
    return str(path)


def connection_options(directory: LdapDirectory) -> dict[Any, Any]:
    """Per-connection TLS options; ``OPT_X_TLS_NEWCTX`` last so libldap builds the context
    from everything set before it (and not from process-wide defaults)."""
    options: dict[Any, Any] = {
        ldap.OPT_PROTOCOL_VERSION: ldap.VERSION3,
        ldap.OPT_REFERRALS: 0,
        ldap.OPT_NETWORK_TIMEOUT: settings.LDAP_TIMEOUT,
        ldap.OPT_TIMEOUT: settings.LDAP_TIMEOUT * 2,
        ldap.OPT_X_TLS_REQUIRE_CERT: ldap.OPT_X_TLS_DEMAND,
        ldap.OPT_X_TLS_PROTOCOL_MIN: ldap.OPT_X_TLS_PROTOCOL_TLS1_2,
    }
    if directory.ca_certificate:
        options[ldap.OPT_X_TLS_CACERTFILE] = ca_file(directory.ca_certificate)
    options[ldap.OPT_X_TLS_NEWCTX] = 0
    return options


def build_settings(directory: LdapDirectory) -> Any:
    """django-auth-ldap settings for one directory (nothing read from Django settings)."""
    group_search = None
    group_type = None
    if directory.group_search_base:
        if directory.group_type == LdapDirectory.POSIX_GROUP:
            group_type = PosixGroupType()
            group_filter = "(objectClass=posixGroup)"
        else:
            group_type = GroupOfNamesType()
            group_filter = "(objectClass=groupOfNames)"
        group_search = LDAPSearch(directory.group_search_base, ldap.SCOPE_SUBTREE, group_filter)
    values = {
        "SERVER_URI": directory.server_uri,
        "START_TLS": directory.start_tls,
        "CONNECTION_OPTIONS": connection_options(directory),
        "BIND_DN": directory.bind_dn,
        "BIND_PASSWORD": directory.bind_password or "",
        "USER_SEARCH": LDAPSearch(
            directory.user_search_base, ldap.SCOPE_SUBTREE, directory.user_search_filter
        ),
        "USER_ATTR_MAP": {
            "full_name": directory.attribute_full_name,
            "email": directory.attribute_email,
        },
        "GROUP_SEARCH": group_search,
        "GROUP_TYPE": group_type,
        "ALWAYS_UPDATE_USER": True,
        "CACHE_TIMEOUT": 0,
        "MIRROR_GROUPS": None,
        "FIND_GROUP_PERMS": False,
    }
    # A prefix no setting uses, so every value comes from here and none from settings.py.
    return LDAPSettings(prefix="UMS_LDAP_DIRECTORY_UNUSED_", defaults=values)


def permissions_from_groups(directory: LdapDirectory, group_dns: set[str]) -> set[str]:
    member_of = {dn.lower() for dn in group_dns}
    codes: set[str] = set()
    for entry in directory.group_permissions or []:
        if str(entry.get("group", "")).lower() in member_of:
            codes.update(entry.get("permissions") or [])
    return codes


class CustomerLDAPBackend(LDAPBackend):  # type: ignore[misc,valid-type]
    """Authenticates ``name@domain`` against the directory of the customer owning ``domain``."""

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> Administrator | None:
        if not username or not password:
            return None
        directory = directory_for(username)
        if directory is None:
            return None
        carrier = request if request is not None else types.SimpleNamespace()
        if not AVAILABLE:
            carrier.ums_directory_problem = PROBLEM_UNAVAILABLE
            return None
        if not directory.customer.login_enabled():
            return None
        local, domain = split_username(username)  # type: ignore[misc]
        self.settings = build_settings(directory)
        self._directory = directory
        self._domain = domain
        self._built = False
        self._conflict: Administrator | None = None
        try:
            return self._authenticate_in_directory(carrier, directory, username, local, password)
        except DirectoryAccountConflict:
            # Recorded after the rollback of the attempt, so the record stays.
            auditing.record(
                "auth.ldap_conflict",
                obj=self._conflict,
                actor=None,
                extra={"directory": directory.pk, "username": username[:150]},
            )
            raise

    def _authenticate_in_directory(
        self, carrier: Any, directory: LdapDirectory, username: str, local: str, password: str
    ) -> Administrator | None:
        with transaction.atomic():
            user = super().authenticate(carrier, username=local, password=password)
            if user is None:
                problem = getattr(carrier, "ums_directory_problem", None)
                if problem is not None:
                    auditing.record(
                        "auth.ldap_unreachable"
                        if problem == PROBLEM_UNREACHABLE
                        else "auth.ldap_error",
                        obj=directory,
                        actor=None,
                        extra={"username": username[:150]},
                    )
                return None
            if not AdministratorBackend().user_can_authenticate(user):
                return None
            if self._built:
                auditing.record(
                    "administrator.create",
                    obj=user,
                    actor=None,
                    after=auditing.snapshot(user),
                    extra={"source": "ldap", "directory": directory.pk},
                )
            from ..identity_actions import apply_directory_permissions

            groups = set(user.ldap_user.group_dns) if directory.group_search_base else set()
            apply_directory_permissions(user, permissions_from_groups(directory, groups), directory)
            auditing.record(
                "auth.ldap_login",
                obj=user,
                actor=user,
                extra={"directory": directory.pk, "groups": sorted(groups)[:50]},
            )
        return user

    def ldap_to_django_username(self, username: str) -> str:
        return f"{username}@{self._domain}".lower()

    def django_to_ldap_username(self, username: str) -> str:
        parts = split_username(username)
        return parts[0] if parts else username

    def get_or_build_user(self, username: str, ldap_user: Any) -> tuple[Administrator, bool]:
        directory = self._directory
        existing = (
            Administrator.objects.select_related("customer")
            .filter(username__iexact=username)
            .first()
        )
        if existing is not None:
            if not existing.customer_path.startswith(directory.customer_path):
                # Never let a directory speak for an account outside its own subtree.
                self._conflict = existing
                raise DirectoryAccountConflict
            return existing, False
        self._built = True
        user = Administrator(
            username=username,
            full_name=username,
            email="",
            customer=directory.customer,
            customer_path=directory.customer_path,
            permissions=[],
        )
        return user, True

    def get_user(self, user_id: Any) -> Administrator | None:
        # Sessions of directory users are checked exactly like everyone else's.
        return AdministratorBackend().get_user(user_id)

    # Permissions are the administrator's own codes, never Django permission tables.
    def get_all_permissions(self, user: Any, obj: Any = None) -> set[str]:
        return set()

    def get_group_permissions(self, user: Any, obj: Any = None) -> set[str]:
        return set()

    def has_perm(self, user: Any, perm: str, obj: Any = None) -> bool:
        return False


def _printable(value: Any, limit: int) -> str:
    return "".join(ch for ch in str(value or "") if ch.isprintable()).strip()[:limit]


if AVAILABLE:

    def _note_directory_error(
        sender: Any, context: str, exception: Exception, **kwargs: Any
    ) -> None:
        request = kwargs.get("request")
        if request is None:
            return
        unreachable = isinstance(exception, ldap.SERVER_DOWN | ldap.TIMEOUT | ldap.CONNECT_ERROR)
        request.ums_directory_problem = PROBLEM_UNREACHABLE if unreachable else PROBLEM_ERROR
        logger.warning("LDAP directory problem while %s: %r", context, exception)

    def _clean_attributes(sender: Any, user: Administrator, ldap_user: Any, **kwargs: Any) -> None:
        """Directory values are outside input: printable, bounded, never blank."""
        user.full_name = _printable(user.full_name, FULL_NAME_MAX) or user.username[:FULL_NAME_MAX]
        email = _printable(user.email, 254)
        user.email = email if "@" in email else ""

    ldap_error.connect(_note_directory_error, sender=CustomerLDAPBackend)
    populate_user.connect(_clean_attributes, sender=CustomerLDAPBackend)
