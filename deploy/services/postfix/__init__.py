"""Postfix on SMTP and IMAP nodes: virtual domains, maps, submission with SASL, delivery.

Roles:

* ``smtp``: the MX and the submission server. Accepts mail for the hosted domains on 25,
  rewrites aliases, forwards and catch-alls (``virtual_alias_maps``) and relays each
  domain to the IMAP node holding it (``transport_maps``); submission (587, STARTTLS) and
  SMTPS (465) require SASL authentication with the mailbox password.
* ``imap``: final delivery into the Maildirs Courier serves (Postfix ``virtual(8)``).
  A node with both roles delivers locally.

SASL: Postfix's Cyrus SASL with ``pwcheck_method: authdaemond`` asks the node's Courier
authdaemond (``deploy.services.courier`` runs it on SMTP nodes too), so submission checks
the very userdb record IMAP logins use: one password store, compiled on the node, no
controller at mail time. A mailbox that may not send, or whose protocol access denies
submission/SMTPS, is refused by ``check_sasl_access`` maps per port; senders cannot use
addresses they do not own (``reject_sender_login_mismatch`` with ``sender_login``).

Every map is a ``hash:`` table compiled with ``postmap`` in the stage by :meth:`validate`
(with ``postmap -q`` probes, since ``postfix check`` catches syntax only), and the
compiled ``.db`` goes live by rename together with its source.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections import defaultdict
from importlib import resources

from deploy.connector.base import Connector
from deploy.services.base import (
    CheckFailed,
    DesiredState,
    DomainData,
    LiveFile,
    ManagedFile,
    NotIncremental,
    Service,
)

from .. import probes
from . import delivery, filtering, safe, signing

ROOT = "/etc/postfix"
#: The master daemon's pid (queue_directory/pid/master.pid on Debian and Rocky).
MASTER_PIDFILE = "/var/spool/postfix/pid/master.pid"
MAPS = (
    "virtual_domains",
    "alias_domains",
    "virtual_mailboxes",
    "virtual_aliases",
    "transport",
    "sender_login",
    "sasl_access_submission",
    "sasl_access_smtps",
    "inbound_denied",
)
#: Maps trivial-rewrite reads (address class and transport of a domain).
_RESOLVER_MAPS = frozenset(
    f"{ROOT}/{name}" for name in ("virtual_domains", "alias_domains", "transport")
)
#: The maps that decide whether, and where, mail for an address is accepted: what a new
#: mailbox's express entries go into (see :meth:`PostfixService.express_entries`).
EXPRESS_MAPS = ("virtual_mailboxes", "virtual_aliases")
TLS_CERT = f"{ROOT}/ums-tls.crt"
TLS_KEY = f"{ROOT}/ums-tls.key"
_TLS_ORDER = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
#: master.cf transport relaying to our own IMAP nodes (see master.cf for why it exists).
RELAY_TRANSPORT = "ums-imap"
#: What the MX answers for a mailbox whose SMTP (port 25) access is denied.
INBOUND_DENIED = "550 5.7.1 This mailbox does not accept mail from other servers"
SASL_SOCKET = "/run/courier/authdaemon/socket"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DIAGNOSTIC = re.compile(r"^(\S*/)?post[a-z]+(\[\d+\])?: (fatal|warning|error|panic): ")


def tls_protocols(minimum: str) -> str:
    """Postfix's protocol list for a minimum version ("TLSv1.2" -> ">=TLSv1.2")."""
    if minimum not in _TLS_ORDER:
        raise safe.UnsafeName(f"unknown TLS version {minimum!r}")
    return f">={minimum}"


def _srs_params(state: DesiredState) -> list[tuple[str, str]]:
    """Postfix's lookups into postsrsd, when converge manages it on this node."""
    from deploy.services import registry
    from deploy.services.srs import postfix_params

    if not any(s.name == "srs" for s in registry.SERVICES):
        return []
    return postfix_params(state)


def _map(lines: list[tuple[str, str]]) -> bytes:
    body = "".join(f"{key} {value}\n" for key, value in lines)
    return ("# Managed by UMS: regenerated on every converge.\n" + body).encode()


def maildir(domain: str, local_part: str) -> str:
    """Maildir of a mailbox relative to the mail root (shared with Courier's userdb)."""
    return f"{safe.domain(domain)}/{safe.local_part(local_part)}/Maildir/"


def holding_node(state: DesiredState, domain: DomainData | None = None) -> str | None:
    """Address of the IMAP node mail for ``domain`` is relayed to; ``None``: deliver here.

    Each domain is placed on one IMAP node (``DomainData.node_id``/``node_address``, from
    ``deploy.placement``): a node that holds the domain delivers locally, any other node
    relays to the holder. A domain of unknown placement (or no domain given) keeps the
    rule from before placements: an IMAP node delivers locally, any other node relays
    to the first IMAP node of the customer tree; ``None`` when there is none yet.
    The address goes into ``ums-imap:[...]:25``: an IP address or a hostname, nothing else.
    """
    import ipaddress

    if domain is not None and domain.node_id is not None and domain.node_address:
        if domain.node_id == state.node.id:
            return None
        address = domain.node_address
    elif "imap" in state.node.roles:
        return None
    else:
        imap_nodes = state.nodes_by_role.get("imap", [])
        if not imap_nodes:
            return None
        address = imap_nodes[0][1]
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return safe.domain(address)


class PostfixService(Service):
    name = "postfix"
    check_cost = 1  # postmap compiles every map
    roles = frozenset({"smtp", "imap"})
    packages = {
        "debian": ("postfix", "libsasl2-modules", "openssl"),
        "rhel": ("postfix", "cyrus-sasl", "cyrus-sasl-plain", "openssl"),
    }
    config_root = ROOT

    # ------------------------------------------------------------------ render

    def render(self, state: DesiredState) -> list[ManagedFile]:
        is_smtp = "smtp" in state.node.roles
        relay_to = holding_node(state)

        domains = [d for d in state.domains if d.enabled]
        hosted = {safe.domain(d.name) for d in domains}
        alias_domains: list[tuple[str, str]] = []
        for d in domains:
            for alias in d.aliases:
                alias_domains.append((safe.domain(alias), "OK"))

        # Each mailbox checked once; from here on its names are written as they are.
        mailboxes = safe.hosted_mailboxes(state.mailboxes, hosted)
        boxes = [(m.email, f"{m.domain}/{m.local_part}/Maildir/") for m in mailboxes]
        mailbox_set = {m.email for m in mailboxes}

        aliases: list[tuple[str, str]] = []
        senders: dict[str, list[str]] = defaultdict(list)
        submission_denied: list[tuple[str, str]] = []
        smtps_denied: list[tuple[str, str]] = []
        inbound_denied: list[tuple[str, str]] = []
        if is_smtp:
            cannot_send = "REJECT This mailbox may not send mail"
            for m in mailboxes:
                email = m.email
                senders[email].append(email)
                if not m.protocols.get("smtp", True):
                    # "SMTP (port 25)" denied: the MX refuses mail addressed to the
                    # mailbox from other servers; UMS users' mail (submission, SMTPS)
                    # and forwards or groups that expand to it still reach it.
                    inbound_denied.append((email, INBOUND_DENIED))
                if not m.can_send:
                    submission_denied.append((email, cannot_send))
                    smtps_denied.append((email, cannot_send))
                    continue
                protocols = m.protocols
                if not protocols.get("submission", True):
                    submission_denied.append((email, "REJECT Submission is disabled"))
                if not protocols.get("smtps", True):
                    smtps_denied.append((email, "REJECT SMTPS is disabled"))
                if m.forward_to:
                    targets = [safe.target_address(t) for t in m.forward_to]
                    if m.forward_keep_copy:
                        targets.insert(0, email)
                    aliases.append((email, ", ".join(targets)))
            for a in state.aliases:
                if not a.enabled or a.email.partition("@")[2] not in hosted:
                    continue
                targets = [safe.target_address(t) for t in a.targets]
                if not targets:
                    continue
                aliases.append((safe.hosted_address(a.email), ", ".join(targets)))
                # Members of an alias may send as the alias.
                for target in targets:
                    if target in mailbox_set:
                        senders[a.email].append(target)
            forwarded = {key for key, _value in aliases}
            by_domain: dict[str, list[str]] = defaultdict(list)
            if any(d.catch_all for d in domains):
                for m in mailboxes:
                    by_domain[m.domain].append(m.email)
            for d in domains:
                if d.catch_all:
                    # A catch-all in virtual_alias_maps would also swallow existing
                    # mailboxes; identity entries keep them (Postfix VIRTUAL_README).
                    for email in by_domain[d.name]:
                        if email not in forwarded:
                            aliases.append((email, email))
                    aliases.append((f"@{d.name}", safe.target_address(d.catch_all)))
                for alias in d.aliases:
                    aliases.append((f"@{safe.domain(alias)}", f"@{d.name}"))

        transport = [
            (safe.domain(d.name), f"{RELAY_TRANSPORT}:[{to}]:25")
            for d in sorted(domains, key=lambda d: d.name)
            if (to := holding_node(state, d) if d.node_id is not None else relay_to)
        ]

        files = [
            ManagedFile(f"{ROOT}/main.cf", self.main_cf(state).encode()),
            ManagedFile(f"{ROOT}/master.cf", self.master_cf(state)),
            ManagedFile(f"{ROOT}/sasl/smtpd.conf", self.sasl_conf()),
            ManagedFile(f"{ROOT}/virtual_domains", _map([(d, "OK") for d in sorted(hosted)])),
            ManagedFile(f"{ROOT}/alias_domains", _map(sorted(alias_domains))),
            ManagedFile(f"{ROOT}/virtual_mailboxes", _map(boxes)),
            ManagedFile(f"{ROOT}/virtual_aliases", _map(aliases)),
            ManagedFile(f"{ROOT}/transport", _map(transport)),
            ManagedFile(
                f"{ROOT}/sender_login",
                _map([(k, ",".join(v)) for k, v in sorted(senders.items())]),
            ),
            ManagedFile(f"{ROOT}/sasl_access_submission", _map(submission_denied)),
            ManagedFile(f"{ROOT}/sasl_access_smtps", _map(smtps_denied)),
            ManagedFile(f"{ROOT}/inbound_denied", _map(inbound_denied)),
        ]
        files += filtering.files(state)
        files += delivery.files(state)
        return files

    def main_cf(self, state: DesiredState) -> str:
        node = state.node
        conf = state.settings
        delivers = "imap" in node.roles
        is_smtp = "smtp" in node.roles
        protocols = tls_protocols(str(conf.get("tls_min_version", "TLSv1.2")))
        networks = ["127.0.0.0/8"]
        for net in conf.get("relay_networks", []) or []:
            # Operator settings are checked at start and before every converge
            # (deploy.node_settings); a network Postfix cannot parse passes "postfix check"
            # and then answers 451 to every RCPT, so parse it here too.
            try:
                networks.append(str(ipaddress.ip_network(str(net), strict=True)))
            except ValueError as exc:
                raise safe.UnsafeName(f"refusing relay network {net!r}: {exc}") from None
        uid, gid = int(conf.get("mail_uid", 5000)), int(conf.get("mail_gid", 5000))
        mail_root = str(conf.get("mail_root", "/var/mail/vhosts"))
        params: list[tuple[str, str]] = [
            ("compatibility_level", "3.6"),
            ("myhostname", safe.domain(node.hostname.lower())),
            ("myorigin", "$myhostname"),
            ("mydestination", ""),
            ("local_recipient_maps", ""),
            ("local_transport", "error:local delivery is disabled"),
            ("alias_maps", ""),
            ("alias_database", ""),
            ("mynetworks", " ".join(networks)),
            ("inet_interfaces", "all"),
            ("inet_protocols", "ipv4"),
            ("smtpd_banner", "$myhostname ESMTP"),
            ("biff", "no"),
            ("append_dot_mydomain", "no"),
            ("readme_directory", "no"),
            ("queue_directory", "/var/spool/postfix"),
            ("data_directory", "/var/lib/postfix"),
            ("recipient_delimiter", "+"),
            ("message_size_limit", "52428800"),
            # Mailbox size is Courier's maildirquota; virtual(8) must not cap it lower.
            ("virtual_mailbox_limit", "0"),
            # Nodes need no DNS to talk to each other; a reverse lookup only adds delay.
            ("smtpd_peername_lookup", "no"),
            ("virtual_mailbox_domains", f"hash:{ROOT}/virtual_domains"),
            ("virtual_mailbox_maps", f"hash:{ROOT}/virtual_mailboxes"),
            ("virtual_alias_domains", f"hash:{ROOT}/alias_domains"),
            # Only the MX rewrites: an IMAP node behind it would forward a second time.
            ("virtual_alias_maps", f"hash:{ROOT}/virtual_aliases" if is_smtp else ""),
            ("transport_maps", f"hash:{ROOT}/transport"),
            ("virtual_mailbox_base", mail_root),
            ("virtual_uid_maps", f"static:{uid}"),
            ("virtual_gid_maps", f"static:{gid}"),
            ("virtual_minimum_uid", "100"),
            ("virtual_transport", "virtual" if delivers else "error:no IMAP node for domain"),
            ("smtpd_tls_cert_file", TLS_CERT),
            ("smtpd_tls_key_file", TLS_KEY),
            ("smtpd_tls_security_level", "may"),
            ("smtpd_tls_protocols", protocols),
            ("smtpd_tls_mandatory_protocols", protocols),
            ("smtp_tls_security_level", "may"),
            ("smtp_tls_protocols", protocols),
            ("smtp_tls_mandatory_protocols", protocols),
            ("smtpd_sasl_auth_enable", "no"),
            ("smtpd_sasl_type", "cyrus"),
            ("smtpd_sasl_path", "smtpd"),
            ("cyrus_sasl_config_path", f"{ROOT}/sasl"),
            ("smtpd_sasl_security_options", "noanonymous"),
            ("smtpd_sasl_local_domain", ""),
            ("smtpd_sender_login_maps", f"hash:{ROOT}/sender_login"),
            (
                "smtpd_relay_restrictions",
                "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
            ),
            # Referenced from master.cf (submission, smtps).
            ("ums_client_restrictions", "permit_sasl_authenticated, reject"),
            (
                "ums_submission_sender_restrictions",
                f"check_sasl_access hash:{ROOT}/sasl_access_submission, "
                "reject_sender_login_mismatch, permit_sasl_authenticated, reject",
            ),
            (
                "ums_smtps_sender_restrictions",
                f"check_sasl_access hash:{ROOT}/sasl_access_smtps, "
                "reject_sender_login_mismatch, permit_sasl_authenticated, reject",
            ),
        ]
        relay = str(conf.get("outbound_relay", "") or "")
        if relay and is_smtp:
            # Checked by deploy.node_settings; bracketed: the host itself, no MX lookup.
            host, _sep, port = relay.partition(":")
            try:
                host = str(ipaddress.IPv4Address(host))
            except ValueError:
                host = safe.domain(host.lower())
            params.append(("relayhost", f"[{host}]:{int(port or 25)}"))
        maillog = str(conf.get("postfix_maillog_file", "") or "")
        if maillog:
            params += [
                ("maillog_file", maillog),
                ("maillog_file_prefixes", "/var, /dev/stdout"),
            ]
        # Content filtering and final delivery add or override parameters; a dict keeps
        # one line per key (postconf warns about, and validate refuses, duplicates).
        merged = dict(params)
        merged.update(filtering.params(state))
        merged.update(delivery.params(state))
        merged.update(signing.params(state, merged))
        merged.update(_srs_params(state))
        if is_smtp:
            # Port 25 only: submission and SMTPS empty smtpd_recipient_restrictions.
            # First, so a denied mailbox is refused before greylisting delays the sender.
            rest = merged.get("smtpd_recipient_restrictions", "")
            merged["smtpd_recipient_restrictions"] = ", ".join(
                part
                for part in (f"check_recipient_access hash:{ROOT}/inbound_denied", rest)
                if part
            )
        lines = ["# Managed by UMS (deploy/services/postfix): replaced on every converge."]
        lines += [
            f"{key} = {safe.config_value(key, value)}".rstrip() for key, value in merged.items()
        ]
        return "\n".join(lines) + "\n"

    def master_cf(self, state: DesiredState) -> bytes:
        base = resources.files(__package__).joinpath("master.cf").read_bytes()
        extra = filtering.master_entries(state) + delivery.master_entries(state)
        return base + extra.encode()

    def sasl_conf(self) -> bytes:
        return (
            "# Managed by UMS: Postfix asks Courier authdaemond (the node's userdb).\n"
            "pwcheck_method: authdaemond\n"
            f"authdaemond_path: {SASL_SOCKET}\n"
            "mech_list: PLAIN LOGIN\n"
        ).encode()

    # ------------------------------------------------------------------ check

    def validate(self, conn: Connector, staged_root: str) -> None:
        def run(argv: list[str]) -> str:
            result = conn.run(argv, timeout=600)
            text = (result.stdout + result.stderr).strip()
            if not result.ok and not text:
                # Without syslog or a tty Postfix fails silently ("postfix check" refusing
                # a log path printed nothing, and the job said only the command line):
                # again under script(1), whose tty gets its reason. Every argument is a
                # constant or the stage path converge made, each quoted.
                again = conn.run(["script", "-qec", shlex.join(argv), "/dev/null"], timeout=600)
                text = (again.stdout + again.stderr).strip().replace("\r", "")
            # Only Postfix's own diagnostics count (a value may contain "error:").
            problems = [line for line in text.splitlines() if _DIAGNOSTIC.search(line)]
            if not result.ok or problems:
                raise CheckFailed(
                    self.name, f"$ {' '.join(argv)}\n" + "\n".join(problems or [text])
                )
            return result.stdout

        # Postfix treats a main.cf modified within the last second or so as "hot" (maybe
        # half-written by an editor) and re-reads it every 300 ms until it is older
        # (dict_load_file): 1.2-1.8 s for every command below on the main.cf we just
        # uploaded. The staged file is complete (written, then renamed into the stage),
        # so date it a few seconds back; mv keeps that date when it goes live.
        touch = conn.run(["touch", "-c", "-m", "-d", "5 seconds ago", f"{staged_root}/main.cf"])
        if not touch.ok:
            raise CheckFailed(self.name, f"touch main.cf: {touch.stderr.strip()}")
        run(["postconf", "-c", staged_root, "-n"])
        run(["postconf", "-c", staged_root, "-M"])
        run(["postfix", "-c", staged_root, "check"])
        for name in MAPS:
            path = f"{staged_root}/{name}"
            run(["postmap", "-c", staged_root, f"hash:{path}"])
            # postfix check does not open maps: probe each compiled one with a real key.
            first = conn.run(["sed", "-n", "/^[^#]/{p;q}", path]).stdout.split(None, 1)
            if first:
                found = conn.run(["postmap", "-c", staged_root, "-q", first[0], f"hash:{path}"])
                if not found.ok or not found.stdout.strip():
                    raise CheckFailed(
                        self.name, f"$ postmap -q {first[0]} hash:{path}\n(no answer)"
                    )

    # ------------------------------------------------------------ incremental path

    def incremental_ok(self, state: DesiredState, changed: list[ManagedFile]) -> bool:
        """Only maps changed (main.cf, master.cf, SASL and filter files as they were)."""
        names = {f"{ROOT}/{name}" for name in MAPS}
        return bool(changed) and all(f.path in names for f in changed)

    def goes_live_alone(self, state: DesiredState, changed: list[ManagedFile]) -> bool:
        """Map-only changes on a node that relays (no ``imap`` role) go live at once.

        RCPT acceptance needs nothing but these maps, and a relaying node hands accepted
        mail to the IMAP node, so no other service's new files are needed: a new address
        is accepted while Courier's ``makeuserdb`` still runs, and even if Courier's check
        fails (its users then cannot log in yet; no mail is refused or lost). A node that
        delivers is left in service order: its delivery agent (Courier's Maildirs, the
        LDA's userdb) must know a mailbox before Postfix accepts mail for it, or the
        message could bounce as an unknown user.
        """
        return self.may_go_live_alone(state) and self.incremental_ok(state, changed)

    def may_go_live_alone(self, state: DesiredState) -> bool:
        return "imap" not in state.node.roles

    def validate_incremental(self, conn: Connector, stage: str, changed: list[LiveFile]) -> None:
        """Apply the key differences to copies of the live ``.db`` files in ``stage``.

        One constant script on the node (see :data:`_INCREMENTAL_SCRIPT`), map names and
        live sha256 as arguments, never keys or values: for each map it checks the live
        source still has the sha256 the hash compare read and its ``.db`` is not older
        than it, diffs the new source against a dump of a copy of the live ``.db`` (added
        or changed entries, removed keys), applies them to that copy with ``postmap -i
        -r`` and ``postmap -d -`` (stdin), then looks every added or changed key up
        with ``postmap -q -`` against its expected value and every removed one for
        absence. Anything unusual
        (continuation lines, duplicate keys, a diagnostic) makes it refuse, and converge
        takes the full path. The copies go live by rename, so a failure never leaves a
        live ``.db`` half updated.
        """
        args: list[str] = []
        for item in changed:
            name = item.file.path.rsplit("/", 1)[1]
            if name not in MAPS or item.file.path != f"{ROOT}/{name}":
                raise NotIncremental(f"{item.file.path} is not a map")
            if not _SHA256.match(item.live_sha256):
                raise NotIncremental(f"no live sha256 for {item.file.path}")
            args += [name, item.live_sha256]
        result = conn.run(
            ["sh", "-c", _INCREMENTAL_SCRIPT, "sh", _NORMALISE_AWK, ROOT, stage, *args], timeout=600
        )
        if not result.ok:
            raise NotIncremental((result.stdout + result.stderr).strip()[-2000:] or "failed")

    # ------------------------------------------------------------------ express entries

    def express_entries(self, state: DesiredState) -> dict[str, list[str]]:
        """Per recipient map, the entries keyed by ``state``'s mailboxes' own addresses.

        ``state`` holds just the new mailboxes and their domains (``desired.build`` with
        ``mailbox_ids``); the lines come from the same renderer a converge uses, so they
        are exactly what the converge will put there, normalised as ``postmap -s`` prints
        them ("key<TAB>value", key case-folded).
        """
        own = {m.email.lower() for m in state.mailboxes}
        wanted = {f"{ROOT}/{name}": name for name in EXPRESS_MAPS}
        entries: dict[str, list[str]] = {}
        for file in self.render(state):
            name = wanted.get(file.path)
            if name is None:
                continue
            for line in file.content.decode().splitlines():
                if not line or line.startswith("#"):
                    continue
                key, _sep, value = line.partition(" ")
                if key.lower() in own:
                    entries.setdefault(name, []).append(f"{key.lower()}\t{value.strip()}")
        return entries

    def add_express_entries(self, conn: Connector, entries: dict[str, list[str]]) -> int:
        """Insert ``entries`` into the live tables with ``postmap -i`` and look each one up.

        Only into tables a converge installed (source and ``.db`` present); the sources
        are left as they are: the converge that follows diffs its new source against what
        the table holds, so it keeps these entries or removes them if the mailbox is gone
        by then. Returns the number of entries added; raises CheckFailed on a refusal.
        """
        added = 0
        for name, lines in entries.items():
            if name not in EXPRESS_MAPS:
                raise CheckFailed(self.name, f"{name} is not a recipient map")
            body = "".join(f"{line}\n" for line in sorted(lines))
            result = conn.run(
                ["sh", "-c", _EXPRESS_SCRIPT, "sh", ROOT, name], input=body.encode(), timeout=60
            )
            if not result.ok:
                raise CheckFailed(self.name, (result.stdout + result.stderr).strip()[-2000:])
            added += len(lines)
        return added

    def activate_incremental(self, conn: Connector, changed: list[ManagedFile]) -> None:
        """No reload for address maps: smtpd and cleanup notice a replaced ``.db`` and
        restart by themselves before their next client ("table ... has changed --
        restarting"). The domain and transport tables are read by trivial-rewrite, a
        long-lived daemon that noticed only tens of seconds later (the post-flight probe
        found a new domain still refused as "Relay access denied"): those get a reload.
        Postfix is started if it is not running at all."""
        if not conn.run(["postfix", "status"]).ok or {f.path for f in changed} & _RESOLVER_MAPS:
            self.activate(conn, changed)

    def compiled_files(self, changed: list[ManagedFile]) -> list[str]:
        names = {f"{ROOT}/{name}" for name in MAPS}
        return [f"{f.path}.db" for f in changed if f.path in names]

    # ------------------------------------------------------------------ probe

    def probe(self, conn: Connector, state: DesiredState, *, strict: bool = True) -> str:
        """SMTP on the node's port 25 from the node itself: EHLO, ``MAIL FROM:<>`` and
        ``RCPT TO`` the first hosted mailbox, which must be accepted (no 4xx: a map or
        network Postfix cannot read answers 451 to every recipient). Without a mailbox, a
        made-up address of the first hosted domain: any answer but a 4xx or "Relay access
        denied" passes. Without a domain (or not ``strict``), any answer but a 4xx passes.
        No message is sent.

        It connects to the node's own mail address, not loopback: a client in
        ``mynetworks`` may relay anywhere, so from 127.0.0.1 a domain Postfix does not
        (yet) know would pass."""
        hosted = {d.name for d in state.domains if d.enabled}
        known = min(
            (
                m.email
                for m in state.mailboxes
                if m.enabled and m.domain in hosted and m.protocols.get("smtp", True)
            ),
            default=None,
        )
        if known:
            rcpt, mode = safe.hosted_address(known), ("known" if strict else "any")
        elif hosted and strict:
            # No mailbox yet: a made-up address of a hosted domain must be refused as
            # unknown, never with "Relay access denied" (maps without the domain).
            rcpt, mode = safe.hosted_address(f"ums-probe@{min(hosted)}"), "hosted"
        else:
            rcpt, mode = "ums-probe@example.invalid", "any"
        try:
            host = str(ipaddress.ip_address(state.node.address))
        except ValueError:
            host = "127.0.0.1"
        return probes.run(
            conn, state, self.name, probes.SMTP_PROBE,
            host, "25", rcpt, mode, str(probes.PROBE_SECONDS),
        )  # fmt: skip

    # ------------------------------------------------------------------ activate

    def pidfiles(self, conn: Connector) -> list[str]:
        return [MASTER_PIDFILE]

    def stop(self, conn: Connector) -> list[int]:
        """``postfix stop`` (the master tells its children to finish), then make sure."""
        from deploy.services.daemon import running_pids, stop_pidfiles

        pids = running_pids(conn, [MASTER_PIDFILE])
        conn.run(["postfix", "stop"], timeout=120)
        stop_pidfiles(conn, [MASTER_PIDFILE])
        return pids

    def activate(self, conn: Connector, changed: list[ManagedFile]) -> None:
        ensure_certificate(conn, TLS_CERT, TLS_KEY)
        status = conn.run(["postfix", "status"])
        verb = "reload" if status.ok else "start"
        # Without syslog or a tty Postfix fails silently; script(1) gives it a tty so its
        # errors reach us. The command string is a constant.
        result = conn.run(["script", "-qec", f"postfix {verb}", "/dev/null"], timeout=120)
        if not result.ok:
            raise CheckFailed(self.name, f"postfix {verb} failed:\n{result.stdout}{result.stderr}")


# Reads a map's new source as postmap reads it: comments and blank lines skipped, key =
# first field (case-folded, as hash maps fold keys), value = the rest, trimmed. Writes one
# "key<TAB>value" line per entry, the form ``postmap -s`` dumps a table in. Exits 3 on what
# a line diff cannot express: continuation lines or duplicate keys.
_NORMALISE_AWK = r"""
/^[ \t]*#/ || /^[ \t\r]*$/ { next }
/^[ \t]/ { bad = 1; exit }
{
  k = tolower($1)
  if (k in seen) { bad = 1; exit }
  seen[k] = 1
  # Most lines are "key value": no regular expression needed (a third of the time).
  if (NF == 2 && !index($0, "\r")) { print k "\t" $2; next }
  v = $0; sub(/^[^ \t]+[ \t]+/, "", v); sub(/[ \t\r]+$/, "", v)
  print k "\t" v
}
END { if (bad) exit 3 }
"""

# Arguments: the awk program above, config root, stage, then (map name, live sha256)
# pairs. The new sources are in the stage; each map's updated .db is built there from a
# copy of the live one. The difference is taken against what that copy holds (``postmap
# -s``), not against the live source: a key that reached the live table by another way
# (a new mailbox's express entry, a hand edit) is corrected too. Keys and values only
# ever travel in files and on stdin. Non-zero exit: converge takes the full path.
_INCREMENTAL_SCRIPT = r"""
set -u
prog=$1; root=$2; stage=$3; shift 3
export LC_ALL=C
fail() { echo "$*"; exit 1; }
while [ $# -ge 2 ]; do
  name=$1; want=$2; shift 2
  live=$root/$name; new=$stage/$name; w=$stage/.$name
  [ -f "$live" ] && [ -f "$live.db" ] && [ -f "$new" ] || fail "$name: no live map"
  [ "$live" -nt "$live.db" ] && fail "$name: $name.db is older than its source"
  have=$(sha256sum < "$live" | cut -c1-64)
  [ "$have" = "$want" ] || fail "$name: live source changed since it was read"
  awk "$prog" "$new" > "$w.want" \
    || fail "$name: not a plain key change (continuation line or duplicate key)"
  cp -p -- "$live.db" "$new.db" || fail "$name: cannot copy $name.db"
  postmap -c "$root" -s "hash:$new" > "$w.have" 2> "$w.out" \
    || fail "$name: postmap -s: $(cat "$w.out")"
  sort -o "$w.want" -- "$w.want" && sort -o "$w.have" -- "$w.have" || fail "$name: sort"
  # Entries to add or change; then keys the table has and the source no longer does.
  comm -13 -- "$w.have" "$w.want" > "$w.add" || fail "$name: comm"
  cut -f1 -- "$w.add" > "$w.keys"
  comm -23 -- "$w.have" "$w.want" | cut -f1 | sort -u | comm -23 - "$w.keys" > "$w.del" \
    || fail "$name: comm"
  if [ -s "$w.add" ]; then
    postmap -c "$root" -i -r "hash:$new" < "$w.add" > "$w.out" 2>&1 \
      || fail "$name: postmap -i: $(cat "$w.out")"
    [ -s "$w.out" ] && fail "$name: postmap -i: $(cat "$w.out")"
  fi
  if [ -s "$w.del" ]; then
    # Exit 1 only says some key was absent; a real problem prints a diagnostic.
    postmap -c "$root" -d - "hash:$new" < "$w.del" > "$w.out" 2>&1
    [ $? -le 1 ] || fail "$name: postmap -d: $(cat "$w.out")"
    [ -s "$w.out" ] && fail "$name: postmap -d: $(cat "$w.out")"
    postmap -c "$root" -q - "hash:$new" < "$w.del" > "$w.out" 2>&1
    [ -s "$w.out" ] && fail "$name: removed keys still answer: $(head -c 500 "$w.out")"
  fi
  if [ -s "$w.keys" ]; then
    postmap -c "$root" -q - "hash:$new" < "$w.keys" 2>&1 | sort > "$w.got"
    cmp -s "$w.add" "$w.got" || fail "$name: lookups differ from the new source"
  fi
  # Newer than its source, so the next converge's age check passes.
  touch -- "$new.db" || fail "$name: touch"
  echo "$name: $(wc -l < "$w.add") added or changed, $(wc -l < "$w.del") removed"
  rm -f -- "$w.want" "$w.have" "$w.add" "$w.del" "$w.keys" "$w.out" "$w.got"
done
"""


# Arguments: config root and map name; stdin: sorted "key<TAB>value" entries. Adds them
# to the live table in place (postmap locks it; daemons reopen a changed table), then
# looks every key up and compares. Keys and values only travel on stdin and in files.
_EXPRESS_SCRIPT = r"""
set -u
root=$1; name=$2
export LC_ALL=C
map=$root/$name
[ -f "$map" ] && [ -f "$map.db" ] || { echo "$name: no live map yet"; exit 1; }
w=$(mktemp -d) || exit 1
trap 'rm -rf -- "$w"' EXIT
sort -o "$w/add" || exit 1
postmap -c "$root" -i -r "hash:$map" < "$w/add" > "$w/out" 2>&1 \
  || { echo "$name: postmap -i: $(cat "$w/out")"; exit 1; }
[ -s "$w/out" ] && { echo "$name: postmap -i: $(cat "$w/out")"; exit 1; }
cut -f1 -- "$w/add" | postmap -c "$root" -q - "hash:$map" 2>&1 | sort > "$w/got"
cmp -s "$w/add" "$w/got" || { echo "$name: lookups differ after postmap -i"; exit 1; }
"""


def ensure_certificate(conn: Connector, cert: str, key: str) -> None:
    """A self-signed certificate until the operator installs a real one (never replaced)."""
    if conn.run(["test", "-s", cert]).ok and conn.run(["test", "-s", key]).ok:
        return
    conn.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "825",
            "-subj",
            "/CN=localhost",
            "-keyout",
            key,
            "-out",
            cert,
        ],
        timeout=120,
    ).check()
    conn.run(["chmod", "600", key]).check()


SERVICE = PostfixService()
