"""The DKIM DNS check: is a key's TXT record published, with this key's public half?

The administrator runs it from the DNS page (a job: a slow resolver never holds a
request). Its result is shown per key and decides when a rotated-in key starts signing
(``deploy.desired.signing_keys``); mail delivery itself never waits on DNS.

Resolvers: ``UMS_DNS_RESOLVER`` ("ip" or "ip:port", comma-separated), else the system's.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.exception
import dns.resolver
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from . import choices, dkim

TIMEOUT = 5.0


@dataclass(frozen=True)
class Finding:
    status: str  # one of choices.DKIM_DNS_STATES
    detail: str  # what was seen, for the administrator (English; shown as data)


def resolver(
    addresses: list[str] | None = None, *, timeout: float = TIMEOUT
) -> dns.resolver.Resolver:
    """A resolver for ``addresses`` ("ip" or "ip:port"), else ``UMS_DNS_RESOLVER``, else
    the system's configuration."""
    wanted = list(settings.UMS_DNS_RESOLVER if addresses is None else addresses)
    if not wanted:
        result = dns.resolver.Resolver()
    else:
        result = dns.resolver.Resolver(configure=False)
        servers, ports = [], set()
        for item in wanted:
            host, _sep, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
            try:
                servers.append(str(ipaddress.ip_address(host)))
            except ValueError:
                raise ImproperlyConfigured(f"UMS_DNS_RESOLVER: {item!r} is not ip[:port]") from None
            if port and not (port.isdigit() and 0 < int(port) < 65536):
                raise ImproperlyConfigured(f"UMS_DNS_RESOLVER: bad port in {item!r}")
            ports.add(int(port or 53))
        if len(ports) > 1:
            raise ImproperlyConfigured("UMS_DNS_RESOLVER: all resolvers must share one port")
        result.nameservers = servers
        result.port = ports.pop()
    result.timeout = result.lifetime = timeout
    return result


def tags(record: str) -> dict[str, str]:
    """``v=DKIM1; k=rsa; p=...`` as a dict; whitespace inside values removed (RFC 6376)."""
    found = {}
    for part in record.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            found[name.strip()] = "".join(value.split())
    return found


def check(selector: str, domain: str, public_key: str, *, using: dns.resolver.Resolver) -> Finding:
    """What ``selector._domainkey.domain`` TXT holds compared with ``public_key``."""
    name = dkim.record_name(selector, domain)
    try:
        answer = using.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return Finding(choices.DNS_MISSING, f"no TXT record at {name}")
    except dns.exception.DNSException as exc:
        return Finding(choices.DNS_ERROR, f"{name}: {type(exc).__name__}: {exc}"[:300])
    published = []
    for rdata in answer:
        text = b"".join(rdata.strings).decode("ascii", errors="replace")
        published.append(tags(text).get("p", ""))
    if public_key in published:
        return Finding(choices.DNS_MATCH, f"{name} publishes this key")
    if any(published):
        return Finding(choices.DNS_MISMATCH, f"{name} publishes a different key")
    return Finding(choices.DNS_MISSING, f"{name} has no DKIM key (p=)")
