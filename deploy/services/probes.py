"""Post-flight probes: small, constant Python programs run on a node after a reload.

A daemon's own checker (``postfix check``, ``nginx -t``) reads files; it cannot tell
whether the running daemon answers clients as it should (a relay network Postfix cannot
parse passes ``postfix check`` and then answers every RCPT with ``451``). Each probe here
talks to the daemon over its real port from the node itself, the way a client would,
and prints one line saying what it saw. Arguments travel as argv, never as code; the
programs use the standard library of the Python the content filter already needs.

Exit status: 0 the daemon answered as expected, anything else a failure (the printed
line says why). A probe retries for a few seconds, because a reloading daemon may still
be restarting its listeners.
"""

from __future__ import annotations

from deploy.connector.base import Connector

from .base import DesiredState, ProbeFailed

#: The Python interpreter per OS family (also what the Postfix content filter runs on).
PYTHON = {"debian": "/usr/bin/python3", "rhel": "/usr/libexec/platform-python"}

#: Seconds a probe keeps retrying before it reports a failure.
PROBE_SECONDS = 8

# Every probe defines attempt() -> (passed, line) and ends with this loop; the last
# argument is how many seconds it keeps trying.
_RETRY = r"""
deadline = time.monotonic() + float(sys.argv[-1])
while True:
    ok, line = attempt()
    if ok or time.monotonic() > deadline:
        print(line.replace("\n", " "))
        sys.exit(0 if ok else 1)
    time.sleep(0.5)
"""

# Any certificate: a node's own may be self-signed, and the probe checks the daemon
# answers, not who signed its certificate.
_TLS_CLIENT = r"""
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
"""

# argv: host, port, recipient, mode ("known": only 2xx passes; "hosted": anything but a
# 4xx, no answer or "Relay access denied"; "any": anything but a 4xx or no answer),
# seconds. MAIL FROM:<> and RCPT only: no message is ever sent.
# "Greylisted" (our policy service's answer) shows the lookups work: it passes.
SMTP_PROBE = (
    r"""
import smtplib, sys, time
host, port, rcpt, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

def attempt():
    code, line = 0, ""
    try:
        with smtplib.SMTP(host, port, timeout=15, local_hostname="ums-probe.invalid") as s:
            code, msg = s.ehlo()
            line = "EHLO: %d %s" % (code, msg.decode(errors="replace").splitlines()[0])
            if code == 250:
                code, msg = s.mail("")
                line = "MAIL FROM:<>: %d %s" % (code, msg.decode(errors="replace"))
            if code == 250:
                code, msg = s.rcpt(rcpt)
                line = "RCPT TO:<%s>: %d %s" % (rcpt, code, msg.decode(errors="replace"))
            try:
                s.rset()
            except smtplib.SMTPException:
                pass
    except (OSError, smtplib.SMTPException) as exc:
        code, line = 0, "%s:%d: %s" % (host, port, exc or type(exc).__name__)
    ok = 200 <= code < 300 or (code in (450, 451) and "Greylisted" in line)
    refused = 500 <= code < 600 and (mode == "any" or (
        mode == "hosted" and "Relay access denied" not in line))
    return ok or refused, line
"""
    + _RETRY
)

# argv: host, port, seconds. A TLS handshake, the IMAP greeting and CAPABILITY.
IMAPS_PROBE = (
    r"""
import socket, ssl, sys, time
host, port = sys.argv[1], int(sys.argv[2])
"""
    + _TLS_CLIENT
    + r"""
def attempt():
    try:
        with socket.create_connection((host, port), timeout=15) as raw:
            with context.wrap_socket(raw) as tls:
                reader = tls.makefile("rb")
                greeting = reader.readline().decode(errors="replace").strip()
                if not greeting.startswith("* OK"):
                    return False, "greeting: " + greeting
                tls.sendall(b"a1 CAPABILITY\r\n")
                caps = got = ""
                while True:
                    got = reader.readline().decode(errors="replace").strip()
                    if not got or got.startswith("a1 "):
                        break
                    caps = got
                tls.sendall(b"a2 LOGOUT\r\n")
                line = "%s (%s) %s" % (tls.version(), caps[:200], got)
                return "IMAP4REV1" in caps.upper(), line
    except (OSError, ssl.SSLError) as exc:
        return False, "%s:%d: %s" % (host, port, exc or type(exc).__name__)
"""
    + _RETRY
)

# argv: host, port, server name, seconds. Any HTTP answer over TLS passes (a 502 from
# a missing backend is still nginx serving its new configuration); refused or silent
# fails.
HTTPS_PROBE = (
    r"""
import http.client, ssl, sys, time
host, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
"""
    + _TLS_CLIENT
    + r"""
def attempt():
    try:
        conn = http.client.HTTPSConnection(host, port, timeout=15, context=context)
        conn.request("HEAD", "/", headers={"Host": name})
        response = conn.getresponse()
        conn.close()
        return True, "HTTPS %s: %d %s" % (name, response.status, response.reason)
    except ssl.SSLError as exc:
        # nginx answered TLS but this client and the configured versions do not meet
        # (a TLS 1.1-only site): it is serving, which is what is probed.
        return True, "TLS answered: %s" % exc
    except (OSError, http.client.HTTPException) as exc:
        return False, "%s:%d: %s" % (host, port, exc or type(exc).__name__)
"""
    + _RETRY
)


def run(conn: Connector, state: DesiredState, service: str, script: str, *args: str) -> str:
    """Run ``script`` with ``args`` on the node; its line, or ProbeFailed with it."""
    python = PYTHON.get(state.node.os_family, PYTHON["debian"])
    # A connector error (the node went away) propagates: it says nothing about the
    # configuration, so it must not cause a rollback.
    result = conn.run([python, "-c", script, *args], timeout=PROBE_SECONDS + 60)
    line = (result.stdout.strip() or result.stderr.strip()[-500:]).strip()
    if result.exit_code == 127:
        # No interpreter on this node: nothing to probe with; say so rather than fail.
        return f"not probed ({python} missing)"
    if not result.ok:
        raise ProbeFailed(service, line or f"exit {result.exit_code}")
    return line
