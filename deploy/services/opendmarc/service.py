"""OpenDMARC on SMTP nodes: checks SPF and DMARC of mail arriving from other servers and
adds ``Authentication-Results`` (``spf=`` and ``dmarc=``) with the node as authserv-id.

Why OpenDMARC's own SPF check (``SPFSelfValidate``, libspf2 in Debian's build) rather than
``postfix-policyd-spf-python``: the SPF result must reach the DMARC evaluation, and inside
one milter it does so without trusting a header; it adds an ``Authentication-Results``
SPF result (policyd-spf writes ``Received-SPF``); it is one daemon fewer to run and
probe; and neither could take a resolver of its own, so the private ``resolv.conf``
below serves both SPF and DMARC lookups. SPF failures never refuse mail here: a hard
``-all`` fails DMARC only if DKIM does not align either, and what happens then is the
recipient's DMARC-failure policy, applied by the content filter.

Order in Postfix (``deploy/services/postfix/signing.py``): OpenDKIM, then OpenDMARC,
then the content filter. Postfix hands each milter the message as the previous ones left
it, so OpenDMARC reads OpenDKIM's verdict (``TrustedAuthservIDs``, our own host name
only; OpenDKIM first deletes copies carrying that name that arrive from outside) and the
filter reads OpenDMARC's to hold, tag or refuse per policy.

Files under :data:`ROOT`: ``opendmarc.conf``, ``IgnoreHosts`` (loopback and
``relay_networks``: our own clients are not checked; authenticated clients neither),
``resolv.conf`` (the ``mail_auth_resolvers`` setting, see :mod:`deploy.services.mail_auth`)
and ``start``, which runs the daemon in a private mount namespace with that file over
``/etc/resolv.conf`` when resolvers are set (the system's otherwise). Under systemd the
package's unit runs the same script (a drop-in). A change restarts the daemon (it has no
reload); Postfix lists it with ``default_action=accept``, so while it restarts, or if it
is down, mail arrives without SPF/DMARC results, never deferred. What it shares with
OpenDKIM (checker, drop-in, probe) is in :mod:`..milter`.

A DNS failure reaches the results as OpenDMARC 1.4 words it (``spf=fail``, ``dmarc=none``);
the content filter, which reads them next, rewrites them to ``temperror`` when its own
lookup gets no answer (``postfix/filter/ums_filter.py``).
"""

from __future__ import annotations

from deploy.connector.base import Connector
from deploy.services.base import DesiredState, ManagedFile

from .. import mail_auth, milter
from ..milter import internal_hosts
from ..postfix import safe

__all__ = ["MILTER", "OpenDmarcService", "checks_enabled", "milter_entry"]

ROOT = "/etc/ums-opendmarc"
HOST, PORT = "127.0.0.1", 8893
MILTER = f"inet:{HOST}:{PORT}"
RUN_DIR = "/run/ums-opendmarc"
PIDFILE = f"{RUN_DIR}/opendmarc.pid"
USER = "opendmarc"
START = f"{ROOT}/start"
PUBLIC_SUFFIXES = "/usr/share/publicsuffix/public_suffix_list.dat"
UNIT = "opendmarc"


def checks_enabled(state: DesiredState) -> bool:
    """SMTP role and ``dmarc_checks`` not turned off."""
    return OpenDmarcService().enabled(state)


def milter_entry() -> str:
    """A checker that is down lets mail in unchecked rather than deferring it."""
    return milter.entry(MILTER)


# argv: resolv.conf, opendmarc.conf. With a nameserver line, a private mount namespace
# where that file is /etc/resolv.conf (libspf2 and the DMARC lookups read only that).
_START = f"""#!/bin/sh
# Managed by UMS (deploy/services/opendmarc): starts OpenDMARC with the mail resolver.
resolv={ROOT}/resolv.conf
conf={ROOT}/opendmarc.conf
mkdir -p {RUN_DIR} && chown {USER}:{USER} {RUN_DIR} || exit 1
if grep -q '^nameserver' "$resolv"; then
  exec unshare --mount --propagation private sh -c \\
    'mount --bind "$0" /etc/resolv.conf && exec /usr/sbin/opendmarc -c "$1"' "$resolv" "$conf"
fi
exec /usr/sbin/opendmarc -c "$conf"
""".encode()


class OpenDmarcService(milter.MilterService):
    """SPF and DMARC checks of inbound mail."""

    name = "opendmarc"
    packages = {"debian": ("opendmarc", "publicsuffix"), "rhel": ("opendmarc", "publicsuffix-list")}
    config_root = ROOT
    host, port = HOST, PORT
    setting = "dmarc_checks"
    binary, conf_flag, conf_name = "opendmarc", "-c", "opendmarc.conf"
    pidfile = PIDFILE
    unit, role_word = UNIT, "checker"

    def render(self, state: DesiredState) -> list[ManagedFile]:
        hostname = safe.domain(state.node.hostname.lower())
        conf = [
            "# Managed by UMS (deploy/services/opendmarc): replaced on every converge.",
            "Syslog true",
            f"Socket inet:{PORT}@{HOST}",
            f"PidFile {PIDFILE}",
            f"UserID {USER}",
            "UMask 007",
            f"AuthservID {hostname}",
            # Only OpenDKIM's verdict on this node counts, never a header from outside.
            f"TrustedAuthservIDs {hostname}",
            f"IgnoreHosts {ROOT}/IgnoreHosts",
            "IgnoreAuthenticatedClients true",
            # SPF is checked here, never taken from a header the sender wrote.
            "SPFSelfValidate true",
            "SPFIgnoreResults true",
            # The content filter applies the recipient's policy; OpenDMARC only reports.
            "RejectFailures false",
            "HoldQuarantinedMessages false",
            "FailureReports false",
            "RequiredHeaders false",
            f"PublicSuffixList {PUBLIC_SUFFIXES}",
        ]
        hosts = "\n".join(internal_hosts(state)) + "\n"
        return [
            ManagedFile(f"{ROOT}/opendmarc.conf", ("\n".join(conf) + "\n").encode()),
            ManagedFile(f"{ROOT}/IgnoreHosts", ("# Managed by UMS.\n" + hosts).encode()),
            ManagedFile(f"{ROOT}/resolv.conf", mail_auth.resolv_conf(state)),
            ManagedFile(START, _START, mode=0o755),
        ]

    def unit_lines(self) -> list[str]:
        # Replaces the package's command line with the start script (resolver, socket,
        # pid file).
        return ["ExecStart=", f"ExecStart={START}"]

    def systemd_verb(self, changed: list[ManagedFile]) -> str:
        """Restart on a change (OpenDMARC re-reads nothing on a signal), else start."""
        return "restart" if changed else "start"

    def activate_without_systemd(self, conn: Connector, changed: list[ManagedFile]) -> None:
        """Restart on a change; start it if it does not run; with nothing changed, leave a
        running one alone."""
        from deploy.services.daemon import running_pids, stop_pidfiles

        if running_pids(conn, [PIDFILE]):
            if not changed:
                return
            stop_pidfiles(conn, [PIDFILE])
        # The start script makes the run directory and enters the resolver's namespace.
        self.start_daemon(conn, [START])
