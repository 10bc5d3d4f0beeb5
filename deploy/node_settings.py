"""The options an operator may set for the configuration rendered onto nodes.

They arrive as one JSON object in ``UMS_NODE_SETTINGS`` (``settings.UMS_CONVERGE``) and
become ``DesiredState.settings``. Each service module reads the keys it owns; this module
is the one list of them, checked at start-up (``deploy.checks``) so a misspelt key or a
wrong type stops the process instead of being silently ignored on every converge.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    "web_hostnames": ((dict,), "load balancer: role -> public host name"),
    "web_backend_ports": ((dict,), "load balancer: role -> backend port"),
    "tls_certificates": ((dict,), "load balancer certificates (normally the renewal store)"),
}


def problems(options: Mapping[str, Any]) -> list[str]:
    """Why ``options`` cannot be used: unknown keys and values of the wrong type."""
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
    return found


def _names(types: tuple[type, ...]) -> str:
    words = {str: "text", int: "a number", float: "a number", bool: "true/false"}
    words |= {list: "a list", dict: "an object"}
    return " or ".join(dict.fromkeys(words[t] for t in types))
