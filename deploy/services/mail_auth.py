"""The DNS resolver the SMTP nodes' mail authentication checks use (SPF, DKIM, DMARC).

One node setting, ``mail_auth_resolvers`` (a list of up to three IP addresses, port 53),
read by both daemons that look things up: OpenDKIM takes it as its own ``Nameservers``
option; OpenDMARC (and libspf2 inside it) only knows the system resolver, so it runs
with a private ``resolv.conf`` bind-mounted over ``/etc/resolv.conf`` in its own mount
namespace (see ``deploy/services/opendmarc``). Unset: the node's system resolver.
"""

from __future__ import annotations

import ipaddress

from deploy.services.base import DesiredState

from .postfix import safe

#: Seconds per query and one attempt: a resolver that does not answer must not hold a
#: message in the milters for minutes (Postfix gives each milter step 60 s).
TIMEOUT, ATTEMPTS = 2, 2


def resolvers(state: DesiredState) -> list[str]:
    """The configured resolvers, each parsed as an IP address; [] for the system's."""
    found = []
    for item in state.settings.get("mail_auth_resolvers") or []:
        try:
            found.append(str(ipaddress.ip_address(str(item))))
        except ValueError:
            raise safe.UnsafeName(f"refusing resolver {item!r}") from None
    return found[:3]


def resolv_conf(state: DesiredState) -> bytes:
    """A resolv.conf naming the resolvers; only a comment when none is configured."""
    lines = ["# Managed by UMS (deploy/services/mail_auth.py): resolvers of the mail checks."]
    servers = resolvers(state)
    lines += [f"nameserver {server}" for server in servers]
    if servers:
        lines.append(f"options timeout:{TIMEOUT} attempts:{ATTEMPTS}")
    return ("\n".join(lines) + "\n").encode()
