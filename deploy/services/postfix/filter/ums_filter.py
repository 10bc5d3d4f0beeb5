#!/usr/bin/env python3
"""UMS content filter, run on SMTP nodes by Postfix's spawn(8) (one process per connection).

Two roles, chosen by the first argument:

``milter``
    A Sendmail milter (protocol 6) for ``smtpd_milters``. It decides per message, during
    the SMTP session, so nothing is ever bounced after acceptance (no backscatter):

    * viruses (clamd INSTREAM) and blocked attachments (extension or MIME type) are put
      in Postfix's hold queue (milter QUARANTINE) for administrators to review;
    * a blocked sender is held too (an administrator can release a false positive);
    * SpamAssassin (spamd SYMBOLS) scores; per recipient domain the score tags (headers,
      subject), holds, or refuses the message with 550 at end of DATA (only if that
      domain's policy sets a reject score);
    * every held message carries exactly one ``X-UMS-Hold: <reason>; key=value; ...``
      header added here; copies arriving from outside are deleted, so nobody can forge
      or trigger a hold;
    * authenticated submission skips spam scoring and the sender lists (our own users;
      sender_login_mismatch already binds them) but still gets virus and attachment
      checks;
    * DMARC: OpenDMARC (an earlier milter) adds ``Authentication-Results: <this node>;
      dmarc=...``; on ``fail`` the recipient domain's ``dmarc_failure`` policy tags
      (``X-UMS-DMARC`` and a subject prefix), holds, refuses, or follows the From
      domain's published ``p=`` (reject refused, quarantine held, none tagged). Any
      other result delivers; ``temperror``/``permerror`` (DNS could not answer) is
      marked in ``X-UMS-DMARC`` and never delays the message;
    * DNS failures are shown as such: OpenDMARC 1.4 writes an SPF record it could not
      fetch as ``spf=fail`` and a DMARC record as ``dmarc=none``. Before anything reads
      them (SpamAssassin reuses our ``spf=`` result and scores SPF_FAIL, users' Sieve
      rules match the header), the filter asks DNS itself and rewrites this node's
      result to ``temperror`` (RFC 8601) when no resolver answers.

    Recipients of one transaction must share one policy (thresholds differ per domain,
    but a message gets one verdict), so a recipient whose domain has another policy is
    answered 452 4.5.3 and the client sends it again in a second transaction (RFC 5321
    requires clients to retry 452 recipients).

    Any failure (spamd or clamd down, unreadable policy, a bug) answers TEMPFAIL: the
    client retries later and no message is lost. Postfix's ``milter_default_action =
    tempfail`` covers a crash or a timeout of this process.

``greylist``
    A Postfix policy service (``check_policy_service``) greylisting by (client /24,
    sender, recipient) for domains whose policy turns greylisting on. State lives in a
    SQLite file; if it cannot be opened the service answers DUNNO (greylisting is a
    nuisance filter, never a reason to lose or delay mail forever).

Reads only ``policy.json`` next to this file (rendered by the controller), so mail keeps
flowing when the controller is down. Standard library only; kept compatible with
Python 3.6 (RockyLinux 8's platform-python), hence ``typing`` generics.
"""
# ruff: noqa: UP006, UP035, UP045

import email
import email.policy
import email.utils
import json
import os
import re
import socket
import sqlite3
import struct
import sys
import syslog
import time
from typing import Any, BinaryIO, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
POLICY_FILE = os.path.join(HERE, "policy.json")

HOLD_HEADER = "X-UMS-Hold"
DMARC_HEADER = "X-UMS-DMARC"
# Headers only this filter may set: incoming copies are deleted before anything else.
OWN_HEADERS = (
    "x-ums-hold", "x-spam-score", "x-spam-flag", "x-spam-status", "x-spam-level", "x-ums-dmarc",
)  # fmt: skip

# Milter protocol constants (libmilter's mfapi.h / mfdef.h).
SMFIF_ADDHDRS = 0x01
SMFIF_CHGHDRS = 0x10
SMFIF_QUARANTINE = 0x20
SMFIP_NOHELO = 0x02
SMFIP_NOUNKNOWN = 0x100
SMFIP_NODATA = 0x200
MILTER_VERSION = 6

_UNSAFE_VALUE = re.compile(r"[;\x00-\x1f\x7f]")
_DMARC_RESULT = re.compile(r"\bdmarc\s*=\s*([a-z]+)", re.I)
_DMARC_POLICY = re.compile(r"\(\s*p\s*=\s*([a-z]+)", re.I)
_DMARC_FROM = re.compile(r"\bheader\.from\s*=\s*([A-Za-z0-9.-]{1,253})", re.I)
# "spf=fail smtp.mailfrom=example.org" (OpenDMARC writes the domain, or user@domain).
_SPF = re.compile(
    r"(\bspf\s*=\s*)([a-z]+)(?=[^;]*?\bsmtp\.(?:mailfrom|helo)\s*=\s*(?:[^@;\s]*@)?"
    r"([A-Za-z0-9.-]{1,253}))",
    re.I,
)
_DMARC_WORD = re.compile(r"(\bdmarc\s*=\s*)([a-z]+)", re.I)
_RULE = re.compile(r"^[A-Za-z0-9_]{1,64}$")


class FilterError(Exception):
    """A check could not run: the message must be deferred, never passed or lost."""


def log(message: str) -> None:
    syslog.syslog(syslog.LOG_MAIL | syslog.LOG_INFO, message)


def clean_value(value: str, limit: int = 200) -> str:
    """A value safe inside an X-UMS-Hold field: no ``;``, no control characters."""
    return _UNSAFE_VALUE.sub("", value).strip()[:limit]


def load_policy(path: str = POLICY_FILE) -> Dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


def strip_brackets(address: str) -> str:
    address = address.strip()
    if address.startswith("<"):
        address = address[1:].split(">", 1)[0]
    return address.strip().lower()


def sender_matches(sender: str, entries: List[str]) -> bool:
    """``user@example.com`` exactly, ``@example.com`` that domain, ``example.com`` it and
    its subdomains."""
    if not sender or "@" not in sender:
        return False
    dom = domain_of(sender)
    for entry in entries:
        if entry.startswith("@"):
            if dom == entry[1:]:
                return True
        elif "@" in entry:
            if sender == entry:
                return True
        elif dom == entry or dom.endswith("." + entry):
            return True
    return False


def policy_key_for(config: Dict[str, Any], recipient: str) -> str:
    """Which policy (by key in ``config["policies"]``) a recipient's domain uses."""
    return config.get("domains", {}).get(domain_of(recipient), "default")


# --------------------------------------------------------------------------- checks


def blocked_attachment(message: bytes, policy: Dict[str, Any]) -> Optional[Tuple[str, str]]:
    """(file name, MIME type) of the first attachment the policy blocks, else None."""
    extensions = set(policy.get("blocked_extensions") or ())
    types = set(policy.get("blocked_mime_types") or ())
    if not extensions and not types:
        return None
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    for part in parsed.walk():
        ctype = part.get_content_type().lower()
        try:
            name = part.get_filename() or ""
        except (LookupError, ValueError):
            name = ""
        if isinstance(name, bytes):  # pragma: no cover - compat32 returns str
            name = name.decode("utf-8", "replace")
        # A file name may hide the real extension behind trailing dots or spaces.
        base = name.strip().rstrip(". ").lower()
        ext = base.rpartition(".")[2] if "." in base else ""
        if (ext and ext in extensions) or ctype in types:
            return name or "(unnamed)", ctype
    return None


def _recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def clamd_scan(message: bytes, config: Dict[str, Any]) -> Optional[str]:
    """The virus name clamd finds, or None. Raises FilterError when clamd cannot scan."""
    host, port = config["clamd"]["host"], int(config["clamd"]["port"])
    limit = int(config["clamd"].get("max_bytes", 0))
    if limit and len(message) > limit:
        # clamd would refuse the stream ("size limit exceeded"); its own limits let such
        # files through unscanned as well, so this is the same policy, stated here.
        log(f"clamd: message of {len(message)} bytes above the scan limit, not scanned")
        return None
    try:
        with socket.create_connection(
            (host, port), timeout=config["clamd"].get("timeout", 120)
        ) as s:
            s.sendall(b"zINSTREAM\0")
            for start in range(0, len(message), 65536):
                chunk = message[start : start + 65536]
                s.sendall(struct.pack(">I", len(chunk)) + chunk)
            s.sendall(struct.pack(">I", 0))
            reply = _recv_all(s).rstrip(b"\0").decode("utf-8", "replace").strip()
    except OSError as exc:
        raise FilterError(f"clamd unavailable: {exc}") from exc
    if reply.endswith("FOUND"):
        name = reply.rsplit(" FOUND", 1)[0].partition(":")[2].strip()
        return clean_value(name) or "unknown"
    if reply.endswith(": OK"):
        return None
    raise FilterError(f"clamd answered {reply[:200]!r}")


def spamd_check(message: bytes, config: Dict[str, Any]) -> Tuple[float, List[str]]:
    """(score, rule names) from spamd. Raises FilterError when spamd cannot score."""
    spamd = config["spamd"]
    request = (
        b"SYMBOLS SPAMC/1.5\r\nContent-length: %d\r\nUser: ums\r\n\r\n" % len(message)
    ) + message
    try:
        with socket.create_connection(
            (spamd["host"], int(spamd["port"])), timeout=spamd.get("timeout", 120)
        ) as s:
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)
            reply = _recv_all(s)
    except OSError as exc:
        raise FilterError(f"spamd unavailable: {exc}") from exc
    head, _sep, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split()
    if len(status) < 2 or not status[0].startswith("SPAMD/") or status[1] != "0":
        raise FilterError(f"spamd answered {lines[0][:200]!r}")
    score = None
    for line in lines[1:]:
        name, _colon, value = line.partition(":")
        if name.strip().lower() == "spam":
            # "True ; 1000.0 / 5.0"
            try:
                score = float(value.split(";", 1)[1].split("/", 1)[0])
            except (IndexError, ValueError) as exc:
                raise FilterError(f"spamd sent no score: {line!r}") from exc
    if score is None:
        raise FilterError("spamd sent no score")
    rules = [r.strip() for r in body.decode("latin-1").replace("\r\n", "").split(",")]
    return score, [r for r in rules if _RULE.match(r)]


def classify(score: float, thresholds: Dict[str, Any]) -> str:
    """Same rule as deploy.services.spamassassin.classify; a None reject never rejects."""
    reject = thresholds.get("reject")
    if reject is not None and score >= float(reject):
        return "reject"
    if score >= float(thresholds["hold"]):
        return "hold"
    if score >= float(thresholds["tag"]):
        return "tag"
    return "pass"


def dmarc_result(auth_results: List[str], authserv_id: str) -> Optional[Dict[str, str]]:
    """OpenDMARC's verdict from the first ``Authentication-Results`` this node wrote:
    {"result", "policy", "domain"}; None without one (checker off or down)."""
    for value in auth_results:
        server, _sep, rest = value.partition(";")
        words = server.split()
        if not words or words[0].lower() != authserv_id.lower():
            continue
        found = _DMARC_RESULT.search(rest)
        if found:
            policy = _DMARC_POLICY.search(rest)
            domain = _DMARC_FROM.search(rest)
            return {
                "result": found.group(1).lower(),
                "policy": policy.group(1).lower() if policy else "",
                "domain": domain.group(1).lower() if domain else "",
            }
    return None


def _dns_query(name: str, qtype: int = 16) -> bytes:
    header = struct.pack(">HHHHHH", int.from_bytes(os.urandom(2), "big"), 0x0100, 1, 0, 0, 0)
    labels = b"".join(
        bytes([len(label)]) + label for label in name.strip(".").encode("ascii").split(b".")
    )
    return header + labels + b"\0" + struct.pack(">HH", qtype, 1)


def system_resolvers(path: str = "/etc/resolv.conf") -> List[str]:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return [
                line.split()[1]
                for line in handle
                if line.startswith("nameserver") and len(line.split()) > 1
            ][:3]
    except OSError:
        return []


def dns_answers(
    name: str, resolvers: List[str], timeout: float = 2.0, silent: Optional[set] = None
) -> bool:
    """Whether a resolver answers a TXT query for ``name`` (NOERROR or NXDOMAIN).

    OpenDMARC (1.4) reports a DMARC record it could not look up as ``dmarc=none``, the
    same as no record at all; this one query tells the two apart, so mail judged while
    DNS is down is marked ``temperror`` instead of passing as unchecked. ``silent``
    collects servers that did not answer and skips them for the next name of the same
    message: one outage costs its timeouts once, not once per name."""
    try:
        query = _dns_query(name)
    except (UnicodeError, ValueError):
        return True  # not a name DNS could hold: nothing to retry later either
    for server in resolvers or system_resolvers():
        if silent is not None and server in silent:
            continue
        if silent is not None:
            silent.add(server)  # until it answers below
        for _attempt in range(2):
            family = socket.AF_INET6 if ":" in server else socket.AF_INET
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as sock:
                    sock.settimeout(timeout)
                    sock.sendto(query, (server, 53))
                    reply = sock.recv(4096)
            except OSError:
                continue
            if len(reply) >= 4 and reply[:2] == query[:2]:
                if silent is not None:
                    silent.discard(server)  # it answers; SERVFAIL is about this name
                if (reply[3] & 0x0F) in (0, 3):
                    return True
    return False


def _ours(value: str, authserv_id: str) -> bool:
    words = value.partition(";")[0].split()
    return bool(words) and words[0].lower() == authserv_id.lower()


def truthful_auth_results(
    auth_results: List[str], authserv_id: str, resolvers: List[str], timeout: float = 2.0
) -> List[str]:
    """This node's ``Authentication-Results`` with what DNS failed to establish written as
    ``temperror`` (RFC 8601, RFC 7208 2.6.6); other values unchanged, same order.

    libspf2 inside OpenDMARC reports an SPF record it could not fetch as ``spf=fail``,
    which SpamAssassin reuses (SPF_FAIL) and a user's Sieve rule takes at its word; a
    result other than ``pass`` is rewritten when no resolver answers for the envelope
    domain now. ``dmarc=none`` (record not fetched) likewise; and ``dmarc=fail`` when SPF
    is now ``temperror``, since the SPF that might have aligned is unknown."""
    silent = set()  # type: set
    checked = {}  # type: Dict[str, bool]

    def reachable(name: str) -> bool:
        if name not in checked:
            checked[name] = dns_answers(name, resolvers, timeout, silent)
        return checked[name]

    out = []
    spf_unknown = False
    for value in auth_results:
        if _ours(value, authserv_id):
            spf = _SPF.search(value)
            if (
                spf
                and spf.group(2).lower() not in ("pass", "temperror")
                and not reachable(spf.group(3).lower().rstrip("."))
            ):
                value = value[: spf.start(2)] + "temperror" + value[spf.end(2) :]
                spf_unknown = True
        out.append(value)
    for i, value in enumerate(out):
        dmarc = _DMARC_WORD.search(value) if _ours(value, authserv_id) else None
        if dmarc is None:
            continue
        result = dmarc.group(2).lower()
        domain = _DMARC_FROM.search(value)
        if (result == "fail" and spf_unknown) or (
            result == "none" and domain and not reachable("_dmarc." + domain.group(1).lower())
        ):
            out[i] = value[: dmarc.start(2)] + "temperror" + value[dmarc.end(2) :]
    return out


#: The action "sender" takes for each published DMARC policy.
_SENDER_POLICY = {"reject": "reject", "quarantine": "hold"}


def dmarc_action(verdict: Optional[Dict[str, str]], policy: Dict[str, Any]) -> str:
    """none, tag, hold or reject for one message's DMARC verdict under one policy."""
    if verdict is None or verdict["result"] != "fail":
        return "none"
    chosen = policy.get("dmarc_failure") or "tag"
    if chosen == "sender":
        return _SENDER_POLICY.get(verdict["policy"], "tag")
    return chosen if chosen in ("none", "tag", "hold", "reject") else "tag"


def hold_value(reason: str, **fields: str) -> str:
    parts = [reason] + [f"{key}={clean_value(value, 900)}" for key, value in fields.items()]
    return "; ".join(parts)


def decide(
    message: bytes,
    policy: Dict[str, Any],
    config: Dict[str, Any],
    *,
    sender: str,
    header_from: List[str],
    authenticated: bool,
    auth_results: Optional[List[str]] = None,
) -> Dict[str, Any]:
    """The verdict for one message: ``action`` (accept/hold/reject), headers to add, hold
    value, subject tags and the refusal text. Raises FilterError when a required check
    cannot run."""
    verdict = {
        "action": "accept",
        "hold": None,
        "headers": [],
        "subject_tags": [],
        "reject": "550 5.7.1 Message rejected as spam",
    }  # type: Dict[str, Any]
    if policy.get("antivirus"):
        virus = clamd_scan(message, config)
        if virus:
            verdict.update(action="hold", hold=hold_value("virus", virus=virus))
            return verdict
    blocked = blocked_attachment(message, policy)
    if blocked:
        name, ctype = blocked
        verdict.update(action="hold", hold=hold_value("attachment", attachment=name, type=ctype))
        return verdict
    if authenticated:
        return verdict
    allowed = sender_matches(sender, policy.get("sender_allow") or [])
    block = policy.get("sender_block") or []
    if not allowed:
        for candidate in [sender, *header_from]:
            if sender_matches(candidate, block):
                verdict.update(action="hold", hold=hold_value("sender", sender=candidate))
                return verdict
    # auth_results as truthful_auth_results left them: DNS failures are temperror.
    dmarc = dmarc_result(auth_results or [], str(config.get("authserv_id") or ""))
    # An allowed sender is the administrator's word (a list that breaks DMARC, say).
    action = "none" if allowed else dmarc_action(dmarc, policy)
    if dmarc is not None and dmarc["result"] in ("fail", "temperror", "permerror"):
        fields = {"domain": dmarc["domain"], "policy": dmarc["policy"] or "none"}
        verdict["headers"].append(
            (DMARC_HEADER, hold_value(dmarc["result"], action=action, **fields))
        )
        if action == "tag" and config.get("dmarc_subject_tag"):
            verdict["subject_tags"].append(config["dmarc_subject_tag"])
        elif action == "hold":
            held = hold_value("dmarc", sender=dmarc["domain"], policy=fields["policy"])
            verdict.update(action="hold", hold=held)
            return verdict
        elif action == "reject":
            verdict.update(
                action="reject",
                reject="550 5.7.1 Message rejected: it fails the DMARC policy of {}".format(
                    clean_value(dmarc["domain"], 253) or "its sender"
                ),
            )
            return verdict
    max_size = int(config["spamd"].get("max_bytes", 512000))
    if len(message) > max_size:
        verdict["headers"].append(("X-Spam-Status", "No, not scanned (message too large)"))
        return verdict
    score, rules = spamd_check(message, config)
    thresholds = policy["thresholds"]
    verdict["headers"].append(("X-Spam-Score", f"{score:.1f}"))
    outcome = "pass" if allowed else classify(score, thresholds)
    flag = outcome != "pass"
    verdict["headers"].append(
        (
            "X-Spam-Status",
            "{}, score={:.1f} tag={} hold={} tests={}{}".format(
                "Yes" if flag else "No",
                score,
                thresholds["tag"],
                thresholds["hold"],
                ",".join(rules) or "none",
                " sender=allowed" if allowed else "",
            ),
        )
    )
    if flag:
        verdict["headers"].append(("X-Spam-Flag", "YES"))
        if config.get("subject_tag"):
            verdict["subject_tags"].append(config["subject_tag"])
    if outcome == "reject":
        verdict["action"] = "reject"
    elif outcome == "hold":
        verdict.update(
            action="hold",
            hold=hold_value("spam", score=f"{score:.1f}", rules=",".join(rules)),
        )
    return verdict


# --------------------------------------------------------------------------- milter


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


class Milter:
    """One SMTP connection's worth of milter conversation on stdin/stdout."""

    def __init__(self, rfile: BinaryIO, wfile: BinaryIO, config: Optional[Dict[str, Any]]):
        self.rfile, self.wfile = rfile, wfile
        self.config = config
        self.macros = {}  # type: Dict[str, str]
        self.reset()

    def reset(self) -> None:
        self.sender = ""
        self.group = None  # type: Optional[str]
        self.headers = []  # type: List[Tuple[str, str]]
        self.body = []  # type: List[bytes]

    def send(self, cmd: bytes, data: bytes = b"") -> None:
        self.wfile.write(struct.pack(">I", len(data) + 1) + cmd + data)

    def flush(self) -> None:
        self.wfile.flush()

    def reply(self, cmd: bytes, data: bytes = b"") -> None:
        self.send(cmd, data)
        self.flush()

    def replycode(self, text: str) -> None:
        self.reply(b"y", text.encode("utf-8") + b"\0")

    @property
    def authenticated(self) -> bool:
        # Submission and SMTPS set milter_macro_daemon_name=ORIGINATING; auth_authen is
        # the SASL login. Either means one of our users sends.
        return bool(self.macros.get("{auth_authen}")) or (
            self.macros.get("{daemon_name}") == "ORIGINATING"
        )

    def run(self) -> None:
        while True:
            try:
                head = _read_exact(self.rfile, 4)
                (size,) = struct.unpack(">I", head)
                packet = _read_exact(self.rfile, size)
            except EOFError:
                return
            cmd, data = packet[:1], packet[1:]
            if cmd == b"O":
                _version, actions, protocol = struct.unpack(">III", data[:12])
                wanted = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_QUARANTINE
                skip = (SMFIP_NOHELO | SMFIP_NOUNKNOWN | SMFIP_NODATA) & protocol
                self.reply(b"O", struct.pack(">III", MILTER_VERSION, wanted & actions, skip))
            elif cmd == b"D":
                items = data[1:].split(b"\0")
                for i in range(0, len(items) - 1, 2):
                    self.macros[items[i].decode("latin-1")] = items[i + 1].decode(
                        "utf-8", "replace"
                    )
            elif cmd == b"M":
                self.reset()
                self.sender = strip_brackets(data.split(b"\0", 1)[0].decode("utf-8", "replace"))
                self.reply(b"c")
            elif cmd == b"R":
                self.on_rcpt(strip_brackets(data.split(b"\0", 1)[0].decode("utf-8", "replace")))
            elif cmd == b"L":
                name, _nul, rest = data.partition(b"\0")
                value = rest.split(b"\0", 1)[0]
                self.headers.append((name.decode("latin-1"), value.decode("utf-8", "replace")))
                self.reply(b"c")
            elif cmd == b"B":
                self.body.append(data)
                self.reply(b"c")
            elif cmd == b"E":
                if data:
                    self.body.append(data)
                self.on_eom()
                self.reset()
            elif cmd == b"A":
                self.reset()
            elif cmd == b"Q":
                return
            elif cmd == b"K":
                self.reset()
                self.macros = {}
            else:  # C(onnect), H(elo), N (end of headers), T (DATA), U(nknown)
                self.reply(b"c")

    def on_rcpt(self, recipient: str) -> None:
        if self.config is None:
            self.reply(b"t")
            return
        group = "outbound" if self.authenticated else policy_key_for(self.config, recipient)
        if self.group is None or self.group == group:
            self.group = group
            self.reply(b"c")
        else:
            self.replycode(
                "452 4.5.3 Recipients with different filtering policies: "
                "please send to this recipient in a separate transaction"
            )

    def policy(self) -> Dict[str, Any]:
        assert self.config is not None
        policies = self.config["policies"]
        key = self.group or "default"
        if key == "outbound":
            key = policy_key_for(self.config, self.sender)
        return policies.get(key) or policies["default"]

    def message_bytes(self) -> bytes:
        lines = []
        for name, value in self.headers:
            if name.lower() in OWN_HEADERS:
                continue
            value = value.replace("\r\n", "\n").replace("\n", "\r\n")
            lines.append((f"{name}: {value}\r\n").encode("utf-8", "replace"))
        return b"".join(lines) + b"\r\n" + b"".join(self.body)

    def check_auth_results(self) -> List[Tuple[int, str]]:
        """Rewrite this node's results DNS could not establish (truthful_auth_results) in
        ``self.headers``, so spamd and the policy read them; returns (index among the
        ``Authentication-Results`` headers, 1-based, new value) for the MTA."""
        assert self.config is not None
        if self.authenticated:
            return []  # not checked by OpenDMARC: nothing of ours to correct
        places = [
            i for i, (n, _v) in enumerate(self.headers) if n.lower() == "authentication-results"
        ]
        before = [self.headers[i][1] for i in places]
        after = truthful_auth_results(
            before,
            str(self.config.get("authserv_id") or ""),
            list(self.config.get("resolvers") or []),
        )
        changes = []
        for nth, place in enumerate(places):
            if after[nth] != before[nth]:
                self.headers[place] = (self.headers[place][0], after[nth])
                changes.append((nth + 1, after[nth]))
        return changes

    def on_eom(self) -> None:
        queue_id = self.macros.get("i", "?")
        try:
            if self.config is None:
                raise FilterError("no readable policy file")
            corrected = self.check_auth_results()
            header_from = [
                strip_brackets(a)
                for _n, a in email.utils.getaddresses(
                    [v for n, v in self.headers if n.lower() == "from"]
                )
                if a
            ]
            verdict = decide(
                self.message_bytes(),
                self.policy(),
                self.config,
                sender=self.sender,
                header_from=header_from,
                authenticated=self.authenticated,
                auth_results=[v for n, v in self.headers if n.lower() == "authentication-results"],
            )
        except Exception as exc:  # any failure defers: the client keeps the message
            log(f"{queue_id}: filter failed, deferring: {exc}")
            self.replycode("451 4.7.1 Content filter temporarily unavailable, try again later")
            return
        if verdict["action"] == "reject":
            log("{}: rejected: {}".format(queue_id, verdict["reject"]))
            self.replycode(verdict["reject"])
            return
        # Delete forged copies of our own headers, the highest index first so the
        # remaining indexes stay valid whatever the MTA's deletion semantics.
        counts = {}  # type: Dict[str, int]
        positions = []  # type: List[Tuple[str, int]]
        for name, _value in self.headers:
            key = name.lower()
            counts[key] = counts.get(key, 0) + 1
            if key in OWN_HEADERS:
                positions.append((name, counts[key]))
        for name, index in reversed(positions):
            self.send(b"m", struct.pack(">I", index) + name.encode("latin-1") + b"\0\0")
        for index, value in corrected:
            log(f"{queue_id}: DNS did not answer: Authentication-Results now {value}")
            self.send(
                b"m",
                struct.pack(">I", index)
                + b"Authentication-Results\0"
                + value.encode("utf-8")
                + b"\0",
            )
        for name, value in verdict["headers"]:
            self.send(b"h", name.encode() + b"\0" + value.encode("utf-8") + b"\0")
        if verdict["subject_tags"]:
            subjects = [v for n, v in self.headers if n.lower() == "subject"]
            new = subjects[0] if subjects else ""
            for tag in reversed(verdict["subject_tags"]):
                if not new.startswith(tag):
                    new = f"{tag} {new}".rstrip()
            if subjects and new != subjects[0]:
                self.send(b"m", struct.pack(">I", 1) + b"Subject\0" + new.encode("utf-8") + b"\0")
            elif not subjects:
                self.send(b"h", b"Subject\0" + new.encode("utf-8") + b"\0")
        if verdict["action"] == "hold":
            self.send(b"h", HOLD_HEADER.encode() + b"\0" + verdict["hold"].encode("utf-8") + b"\0")
            self.send(
                b"q", ("UMS hold: {}".format(verdict["hold"].split(";", 1)[0])).encode() + b"\0"
            )
            log("{}: held: {}".format(queue_id, verdict["hold"]))
        self.reply(b"c")


def run_milter() -> None:
    try:
        config = load_policy()  # type: Optional[Dict[str, Any]]
    except (OSError, ValueError) as exc:
        log(f"cannot read {POLICY_FILE}: {exc}")
        config = None
    Milter(sys.stdin.buffer, sys.stdout.buffer, config).run()


# --------------------------------------------------------------------------- greylisting


def _client_net(address: str) -> str:
    if ":" in address:  # IPv6: the /64
        return ":".join(address.split(":")[:4])
    return ".".join(address.split(".")[:3])


def greylist_verdict(
    db: sqlite3.Connection, request: Dict[str, str], delay: int, now: float
) -> str:
    """``DEFER_IF_PERMIT ...`` for a new triplet or one retried too early, else ``DUNNO``."""
    key = "{}/{}/{}".format(
        _client_net(request.get("client_address", "")),
        request.get("sender", "").lower(),
        request.get("recipient", "").lower(),
    )
    row = db.execute("SELECT first_seen FROM triplets WHERE key = ?", (key,)).fetchone()
    if row is None:
        db.execute(
            "INSERT OR IGNORE INTO triplets (key, first_seen, last_seen) VALUES (?, ?, ?)",
            (key, now, now),
        )
        db.commit()
        return "DEFER_IF_PERMIT Greylisted, please try again later"
    db.execute("UPDATE triplets SET last_seen = ? WHERE key = ?", (now, key))
    db.commit()
    if now - row[0] < delay:
        return "DEFER_IF_PERMIT Greylisted, please try again later"
    return "DUNNO"


def open_greylist_db(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=10)
    db.execute(
        "CREATE TABLE IF NOT EXISTS triplets "
        "(key TEXT PRIMARY KEY, first_seen REAL NOT NULL, last_seen REAL NOT NULL)"
    )
    # Forget triplets not seen for the retention period (default 35 days).
    return db


def run_greylist() -> None:
    try:
        config = load_policy()  # type: Optional[Dict[str, Any]]
    except (OSError, ValueError) as exc:
        log(f"greylist: cannot read {POLICY_FILE}: {exc}")
        config = None
    grey = (config or {}).get("greylist") or {}
    db = None  # type: Optional[sqlite3.Connection]
    if config is not None:
        try:
            db = open_greylist_db(grey["db"])
            cutoff = time.time() - float(grey.get("retention", 35 * 86400))
            db.execute("DELETE FROM triplets WHERE last_seen < ?", (cutoff,))
            db.commit()
        except (sqlite3.Error, OSError, KeyError) as exc:
            log(f"greylist: database unavailable, not greylisting: {exc}")
            db = None
    rfile, wfile = sys.stdin.buffer, sys.stdout.buffer
    request = {}  # type: Dict[str, str]
    for raw in rfile:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line:
            name, _eq, value = line.partition("=")
            request[name] = value
            continue
        action = "DUNNO"
        if db is not None and config is not None:
            key = policy_key_for(config, request.get("recipient", ""))
            policy = config["policies"].get(key) or config["policies"]["default"]
            if policy.get("greylisting"):
                try:
                    action = greylist_verdict(db, request, int(grey.get("delay", 300)), time.time())
                except sqlite3.Error as exc:
                    log(f"greylist: database error, not greylisting: {exc}")
        wfile.write((f"action={action}\n\n").encode())
        wfile.flush()
        request = {}


def main(argv: List[str]) -> int:
    syslog.openlog("ums-filter", syslog.LOG_PID, syslog.LOG_MAIL)
    # spawn(8) connects stdin and stdout to Postfix; anything on stderr must not reach
    # the protocol stream.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    mode = argv[1] if len(argv) > 1 else ""
    if mode == "milter":
        run_milter()
    elif mode == "greylist":
        run_greylist()
    else:
        return 64
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
