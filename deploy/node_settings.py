"""The options an operator may set for the configuration rendered onto nodes.

They arrive as one JSON object in ``UMS_NODE_SETTINGS`` (``settings.UMS_CONVERGE``) and
become ``DesiredState.settings``. Each service module reads the keys it owns; this module
is the one list of them, checked at start-up (``deploy.checks``) so a misspelt key or a
wrong type stops the process instead of being silently ignored on every converge.

Types are not enough: ``"relay_networks": ["10.9.0.0/99"]`` passes ``postfix check``,
goes live, and every message then gets ``451 4.3.0 Temporary lookup failure``; a newline
in ``postfix_maillog_file`` reaches ``main.cf``. So each key also has a value check
(:data:`VALUE_CHECKS`: networks parsed with :mod:`ipaddress`, paths absolute, plain and
under an allowed prefix, names and numbers within range, no control characters
anywhere). :func:`problems` gives every reason naming its key; the start-up check
(``deploy.checks``) and every converge (:func:`deploy.converge.converge`, before anything
is rendered) refuse settings that have any.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any

_TEXT = (str,)
_INT = (int,)
_BOOL = (bool,)

#: key -> (accepted JSON types, what it does). Keep in step with the README.
OPTIONS: dict[str, tuple[tuple[type, ...], str]] = {
    "tls_min_version": (_TEXT, "lowest TLS version of Postfix and Courier (TLSv1.2)"),
    "tls_versions": ((list,), 'TLS versions nginx load balancers offer (["TLSv1.2"])'),
    "mail_root": (_TEXT, "where Maildirs live on IMAP nodes (/var/mail/vhosts)"),
    "mail_uid": (_INT, "numeric owner of the mail store (5000)"),
    "mail_gid": (_INT, "numeric group of the mail store (5000)"),
    "mail_user": (_TEXT, "user name the delivery agent runs as (vmail)"),
    "postfix_maillog_file": (_TEXT, "Postfix log file; empty logs to syslog"),
    "lda_log_file": (_TEXT, "delivery agent log file; empty logs to syslog"),
    "content_filter": (_BOOL, "filter mail on SMTP nodes (true); false: a plain relay"),
    "relay_networks": ((list,), "networks relaying without authentication besides loopback"),
    "outbound_relay": (_TEXT, "smarthost SMTP nodes send outbound mail through (host[:port])"),
    "srs_domain": (_TEXT, "domain forwarded senders are rewritten into (SRS); unset: no SRS"),
    "srs_secret": (_TEXT, "SRS secret; set by the controller from SECRET_KEY"),
    "dkim_signing": (_BOOL, "OpenDKIM signs outbound and verifies inbound mail (true)"),
    "dmarc_checks": (_BOOL, "OpenDMARC checks SPF and DMARC of inbound mail (true)"),
    "mail_auth_resolvers": ((list,), "DNS servers (IP addresses) for SPF/DKIM/DMARC checks"),
    "dmarc_subject_tag": (_TEXT, "subject prefix of mail tagged for failing DMARC ([DMARC])"),
    "antivirus": (_BOOL, "force clamd on or off on SMTP nodes (default: per policy)"),
    "spam_network_checks": (_BOOL, "SpamAssassin DNS blocklists (true)"),
    "spam_subject_tag": (_TEXT, "subject prefix of tagged spam ([SPAM])"),
    "spam_max_size": (_INT, "bytes of a message spamd scores (512000)"),
    "spam_timeout": (_INT, "seconds the filter waits for spamd (120)"),
    "spam_tag_score": ((int, float), "node-wide default tag score"),
    "spam_hold_score": ((int, float), "node-wide default hold score"),
    "spam_reject_score": ((int, float), "node-wide default reject score (none)"),
    "clamav_max_file_size_mb": (_INT, "largest message clamd scans, MB (25)"),
    "clamav_timeout": (_INT, "seconds the filter waits for clamd (120)"),
    "greylist_delay": (_INT, "seconds before a greylisted sender may retry (300)"),
    "greylist_retention_days": (_INT, "days a greylisting triple is remembered (35)"),
    "mail_store_pool": (_TEXT, "ZFS pool of the mail store on IMAP nodes; unset: directories"),
    "mail_store_dataset": (_TEXT, "parent dataset of the per-domain datasets (<pool>/mail)"),
    "mail_store_compression": (_TEXT, "ZFS compression of mail datasets (on)"),
    "mail_store_dedup": ((str, bool), "ZFS dedup: auto (only with 256 GB RAM), true, false"),
    "mail_store_mountpoint": (_TEXT, "where the parent dataset is mounted (the mail root)"),
    "replica_domains": ((list,), "domains the node holds as replicas (set by replication)"),
    "web_hostnames": ((dict,), "load balancer: role -> public host name"),
    "nextcloud_occ": ((list,), "how occ runs on cloud files nodes (sudo -u www-data php .../occ)"),
    "nextcloud_url": (_TEXT, "Nextcloud's URL for OCS calls; {address} is the node's address"),
    "nextcloud_tls_verify": (_BOOL, "verify Nextcloud's TLS certificate on OCS calls (true)"),
    "nextcloud_storage": (_TEXT, "Nextcloud primary storage: local or s3 (local)"),
    "nextcloud_s3": ((dict,), "S3 object store of Nextcloud: bucket, hostname, port, region..."),
    "files_antivirus": (_BOOL, "scan uploads to Nextcloud with the node's clamd (true)"),
    "dav_listen": (_TEXT, "Radicale's address:port on cloud-files nodes (<node address>:5232)"),
    "dav_auth_delay": (_INT, "seconds Radicale waits after a failed DAV login (1)"),
    "web_backend_ports": ((dict,), "load balancer: role -> backend port"),
    "collabora_port": (_INT, "coolwsd's port on office nodes, probed from the node (9980)"),
    "collabora_group": (_TEXT, "group that reads coolwsd.xml on office nodes (cool)"),
    "tls_certificates": ((dict,), "load balancer certificates (normally the renewal store)"),
}


# ----------------------------------------------------------------------- value checks
# Each returns why a (well-typed) value cannot be used, or None.

#: Control characters (C0, DEL, C1): never part of a value written into a config file.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: Where log files may go: Postfix's own ``maillog_file_prefixes`` rule (under /var), and
#: standard output for containers.
LOG_PREFIXES = ("/var/",)
LOG_EXACT = ("/dev/stdout",)
#: Where the mail store may live.
MAIL_ROOT_PREFIXES = ("/var/", "/srv/", "/home/", "/data/", "/mnt/", "/export/")
_PATH = re.compile(r"/[A-Za-z0-9._/+-]+")
_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_DATASET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*(/[A-Za-z0-9][A-Za-z0-9_.:-]*)*")
_HOST = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_TLS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_ZFS_COMPRESSION = re.compile(r"on|off|lzjb|gzip|gzip-[1-9]|zle|lz4|zstd(-[0-9]{1,2})?")


def control_characters(value: str) -> str | None:
    """Why ``value`` cannot be written into a config file, or None (shared with renderers)."""
    found = _CONTROL.search(value)
    if found:
        return f"contains a control character ({found.group()!r}) at position {found.start()}"
    return None


def _text(value: str) -> str | None:
    return control_characters(value)


def _path(value: str, prefixes: tuple[str, ...], exact: tuple[str, ...] = ()) -> str | None:
    if reason := control_characters(value):
        return reason
    if value in exact:
        return None
    if not _PATH.fullmatch(value):
        return f"{value!r} is not an absolute path of letters, digits and . _ / + -"
    if any(part in ("", ".", "..") for part in value.rstrip("/").split("/")[1:]):
        return f"{value!r} has an empty, '.' or '..' component"
    if not value.startswith(prefixes):
        allowed = ", ".join([*prefixes, *exact])
        return f"{value!r} is not under an allowed prefix ({allowed})"
    return None


def _log_path(value: str) -> str | None:
    return None if value == "" else _path(value, LOG_PREFIXES, LOG_EXACT)


def _mail_root(value: str) -> str | None:
    return _path(value, MAIL_ROOT_PREFIXES)


def _networks(value: list) -> str | None:
    for item in value:
        if not isinstance(item, str):
            return f"every network must be text, got {type(item).__name__}"
        if reason := control_characters(item):
            return f"{item!r} {reason}"
        try:
            # strict: 10.9.0.1/16 (host bits set) is as suspicious as a bad prefix.
            ipaddress.ip_network(item, strict=True)
        except ValueError as exc:
            return f"{item!r} is not a network: {exc}"
    return None


def _relay(value: str) -> str | None:
    """``host`` or ``host:port`` (an IPv4 address or a DNS name); empty: direct delivery."""
    host, _sep, port = value.rpartition(":") if ":" in value else (value, "", "")
    if value and not _HOST.fullmatch(host):
        return f"{value!r} is not host or host:port"
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        return f"{port!r} is not a port number (1..65535)"
    return None


def _range(low: float, high: float) -> Callable[[Any], str | None]:
    def check(value: float) -> str | None:
        if not low <= value <= high:
            return f"{value} is outside {low}..{high}"
        return None

    return check


def _tls_version(value: str) -> str | None:
    return None if value in _TLS else f"{value!r} is not one of {', '.join(_TLS)}"


def _tls_versions(value: list) -> str | None:
    if not value:
        return "at least one TLS version is needed"
    bad = [v for v in value if not isinstance(v, str) or v not in _TLS]
    return f"{bad!r}: each must be one of {', '.join(_TLS)}" if bad else None


def _user(value: str) -> str | None:
    return None if _NAME.fullmatch(value) else f"{value!r} is not a plain user name"


def _dataset(value: str) -> str | None:
    ok = _DATASET.fullmatch(value) and ".." not in value and len(value) <= 200
    return None if ok else f"{value!r} is not a plain ZFS dataset name"


def _compression(value: str) -> str | None:
    return None if _ZFS_COMPRESSION.fullmatch(value) else f"{value!r} is not a ZFS compression"


def _dedup(value: str | bool) -> str | None:
    ok = isinstance(value, bool) or value in ("auto", "on", "off", "true", "false")
    return None if ok else f"{value!r} is not auto, on, off, true or false"


def _subject_tag(value: str) -> str | None:
    return control_characters(value) or (f"{len(value)} characters (at most 64)"
                                          if len(value) > 64 else None)  # fmt: skip


def _hostnames(value: dict) -> str | None:
    for role, host in value.items():
        if not isinstance(host, str) or not _HOST.fullmatch(host):
            return f"{role}: {host!r} is not a host name"
    return None


def _argv(value: list) -> str | None:
    if not value or not all(isinstance(p, str) and p and not control_characters(p) for p in value):
        return "must be a non-empty list of plain words (the occ command line)"
    return None


def _url(value: str) -> str | None:
    ok = re.fullmatch(r"https?://[A-Za-z0-9.:{}\[\]-]+(/[A-Za-z0-9._~/-]*)?", value)
    return None if ok else f"{value!r} is not an http(s) URL"


def _storage(value: str) -> str | None:
    return None if value in ("local", "s3") else f"{value!r} is not local or s3"


def _s3(value: dict) -> str | None:
    allowed = {"bucket", "hostname", "port", "region", "use_ssl", "use_path_style", "key",
               "secret", "autocreate"}  # fmt: skip
    for key, item in value.items():
        if key not in allowed:
            return f"unknown key {key!r} (allowed: {', '.join(sorted(allowed))})"
        if isinstance(item, str) and control_characters(item):
            return f"{key}: {control_characters(item)}"
        if not isinstance(item, (str, int, bool)):
            return f"{key}: must be text, a number or true/false"
    return None


def _ports(value: dict) -> str | None:
    for role, port in value.items():
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            return f"{role}: {port!r} is not a port number (1..65535)"
    return None


def _resolvers(value: list) -> str | None:
    """Port 53 only: the resolver libraries the daemons use take an address, no port."""
    if len(value) > 3:
        return "at most 3 resolvers (the limit of /etc/resolv.conf)"
    for item in value:
        if not isinstance(item, str):
            return f"every resolver must be text, got {type(item).__name__}"
        try:
            ipaddress.ip_address(item)
        except ValueError:
            return f"{item!r} is not an IP address"
    return None


def _srs_domain(value: str) -> str | None:
    ok = _HOST.fullmatch(value) and "." in value
    return None if ok else f"{value!r} is not a domain name"


def _srs_secret(value: str) -> str | None:
    return None if len(value) >= 32 and value.isalnum() else "at least 32 letters or digits"


_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})+")


def _domain_names(value: list) -> str | None:
    for item in value:
        if not isinstance(item, str) or not _DOMAIN.fullmatch(item):
            return f"{item!r} is not a domain name"
    return None


_SCORE = _range(-1000, 1000)

_LISTEN = re.compile(r"(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):(\d{1,5})")


def _listen(value: str) -> str | None:
    match = _LISTEN.fullmatch(value)
    if not match or not 0 < int(match.group(1)) < 65536:
        return "expected address:port, e.g. 0.0.0.0:5232 or [::]:5232"
    return None


#: key -> check of a value of the right type (see OPTIONS). Keys without one need none
#: beyond their type (booleans, the certificate store the nginx service checks itself).
VALUE_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "tls_min_version": _tls_version,
    "tls_versions": _tls_versions,
    "mail_root": _mail_root,
    "mail_uid": _range(100, 2**31 - 1),
    "mail_gid": _range(100, 2**31 - 1),
    "mail_user": _user,
    "postfix_maillog_file": _log_path,
    "lda_log_file": _log_path,
    "relay_networks": _networks,
    "outbound_relay": _relay,
    "srs_domain": _srs_domain,
    "srs_secret": _srs_secret,
    "spam_subject_tag": _subject_tag,
    "dmarc_subject_tag": _subject_tag,
    "mail_auth_resolvers": _resolvers,
    "spam_max_size": _range(1024, 1024**3),
    "spam_timeout": _range(1, 3600),
    "spam_tag_score": _SCORE,
    "spam_hold_score": _SCORE,
    "spam_reject_score": _SCORE,
    "clamav_max_file_size_mb": _range(1, 4096),
    "clamav_timeout": _range(1, 3600),
    "greylist_delay": _range(0, 86400),
    "greylist_retention_days": _range(1, 3650),
    "mail_store_pool": _dataset,
    "mail_store_dataset": _dataset,
    "mail_store_compression": _compression,
    "mail_store_dedup": _dedup,
    "mail_store_mountpoint": _mail_root,
    "replica_domains": _domain_names,
    "web_hostnames": _hostnames,
    "web_backend_ports": _ports,
    "nextcloud_occ": _argv,
    "nextcloud_url": _url,
    "nextcloud_storage": _storage,
    "nextcloud_s3": _s3,
    "dav_listen": _listen,
    "dav_auth_delay": _range(0, 60),
    "collabora_port": _range(1, 65535),
    "collabora_group": _user,
}


def problems(options: Mapping[str, Any]) -> list[str]:
    """Why ``options`` cannot be used, one reason per bad key, each naming its key:
    unknown keys, values of the wrong type, values the value check refuses."""
    found = []
    for key, value in options.items():
        if key not in OPTIONS:
            found.append(f"unknown option {key!r}")
            continue
        types = OPTIONS[key][0]
        # JSON true/false are ints to isinstance(); an int option must not take them.
        if isinstance(value, bool) and bool not in types:
            found.append(f"{key} must be {_names(types)}, got a boolean")
        elif not isinstance(value, types):
            found.append(f"{key} must be {_names(types)}, got {type(value).__name__}")
        elif (check := VALUE_CHECKS.get(key)) and (reason := check(value)):
            found.append(f"{key}: {reason}")
    return found


class InvalidNodeSettings(ValueError):
    """Node settings that must not be rendered; the message names each key and why."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("UMS_NODE_SETTINGS refused: " + "; ".join(reasons))
        self.reasons = reasons


def validate(options: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidNodeSettings` when :func:`problems` finds anything."""
    if found := problems(options):
        raise InvalidNodeSettings(found)


def _names(types: tuple[type, ...]) -> str:
    words = {str: "text", int: "a number", float: "a number", bool: "true/false"}
    words |= {list: "a list", dict: "an object"}
    return " or ".join(dict.fromkeys(words[t] for t in types))
