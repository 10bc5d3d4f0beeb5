"""Content filtering on the SMTP node: real spamd, real clamd, real Postfix milter.

Unit tests cover the rendering (what reaches main.cf, master.cf and the filter's policy
file, and that unsafe policy values are refused) and the node-side decisions. The node
tests converge an SMTP and an IMAP node with SpamAssassin and ClamAV and send real mail:
GTUBE is held, clean mail is delivered with an X-Spam-Score header, an ``.exe``
attachment and EICAR are held with the reason recorded in ``X-UMS-Hold``, a forged
``X-UMS-Hold`` does nothing, an allow-listed sender skips the spam hold, greylisting
temp-fails then accepts, and a stopped spamd defers mail instead of losing it.

ClamAV has no signature download here: the node's database is a local one with the
EICAR signature, built with ``sigtool`` like tests/services/clamav does.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import smtplib
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from types import ModuleType

import paramiko
import pytest
from django.urls import reverse

from deploy.services import registry
from deploy.services.base import DesiredState, DomainData, NodeView
from deploy.services.clamav import SERVICE as CLAMAV
from deploy.services.courier import SERVICE as COURIER
from deploy.services.postfix import SERVICE as POSTFIX
from deploy.services.postfix import filtering, safe
from deploy.services.spamassassin import SERVICE as SPAMASSASSIN
from deploy.services.spamassassin import SPAMD_PORT
from deploy.services.spamassassin.service import SPAMD_PIDFILE
from servers.models import Zone
from tests.fixtures import Cast
from tests.harness.sshnodes import TestNode
from tests.servers.conftest import controller_key, controller_pkey, zone  # noqa: F401

from .conftest import MAIL_PRIVATE_PATHS, MailNodes, approved_node, trusting_cluster
from .test_mail_flow import DOMAIN, maildir, setup_mail

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
# Built from two halves so no file in the repository is itself flagged by scanners.
EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$" + r"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GREYLIST_DELAY = 3

# --------------------------------------------------------------------------- rendering


def _state(*policies: dict, roles: tuple[str, ...] = ("smtp",)) -> DesiredState:
    node = NodeView(3, "smtp1.ums.test", "10.0.0.2", roles, "debian", 1)
    domains = [
        DomainData(f"d{i}.example", True, "", (f"alias{i}.example",), None, p)
        for i, p in enumerate(policies)
    ]
    return DesiredState(node=node, domains=domains, settings={"greylist_delay": 7})


def _rendered(state: DesiredState) -> dict[str, bytes]:
    return {f.path: f.content for f in POSTFIX.render(state)}


def test_smtp_node_routes_every_smtpd_through_the_filter() -> None:
    files = _rendered(_state({}, {"spam_hold_score": 6.0}))
    main_cf = files["/etc/postfix/main.cf"].decode()
    assert "\nenable_long_queue_ids = yes\n" in main_cf
    # OpenDKIM and OpenDMARC first (the filter reads their verdicts; each never defers
    # mail: its own default_action=accept overrides the tempfail that protects filtering).
    assert (
        "\nsmtpd_milters = { inet:127.0.0.1:8891, default_action=accept }, "
        "{ inet:127.0.0.1:8893, default_action=accept }, unix:private/ums-milter\n"
    ) in main_cf
    assert "\nmilter_default_action = tempfail\n" in main_cf
    assert "\nheader_checks = regexp:/etc/postfix/ums_header_checks\n" in main_cf
    # Greylisting is off by default: no policy service, no restriction.
    assert "check_policy_service" not in main_cf
    master = files["/etc/postfix/master.cf"].decode()
    assert "ums-milter unix" in master and "ums-greylist" not in master
    assert "argv=/usr/bin/python3 /etc/postfix/ums-filter/ums_filter.py milter" in master
    assert files["/etc/postfix/ums-filter/ums_filter.py"] == filtering.script()
    assert b"/^X-UMS-Hold:/i IGNORE" in files["/etc/postfix/ums_header_checks"]
    config = json.loads(files["/etc/postfix/ums-filter/policy.json"])
    assert config["domains"] == {
        "d0.example": "p1",
        "alias0.example": "p1",
        "d1.example": "p2",
        "alias1.example": "p2",
    }
    assert config["policies"]["p2"]["thresholds"]["hold"] == 6.0
    assert "exe" in config["policies"]["p1"]["blocked_extensions"]


def test_greylisting_only_when_a_domain_enables_it() -> None:
    files = _rendered(_state({}, {"greylisting": True}))
    main_cf = files["/etc/postfix/main.cf"].decode()
    # After the per-mailbox "SMTP (25) denied" check, which refuses without delaying.
    assert (
        "\nsmtpd_recipient_restrictions = check_recipient_access "
        "hash:/etc/postfix/inbound_denied, check_policy_service unix:private/ums-greylist\n"
    ) in main_cf
    assert "ums-greylist unix" in files["/etc/postfix/master.cf"].decode()
    config = json.loads(files["/etc/postfix/ums-filter/policy.json"])
    assert config["greylist"]["delay"] == 7
    policies = [config["policies"][config["domains"][d]] for d in ("d0.example", "d1.example")]
    assert [p["greylisting"] for p in policies] == [False, True]


def test_imap_only_node_has_no_filter() -> None:
    files = _rendered(_state({}, roles=("imap",)))
    main_cf = files["/etc/postfix/main.cf"].decode()
    assert "milter" not in main_cf and "\nenable_long_queue_ids = yes\n" in main_cf
    assert not [p for p in files if "ums-filter" in p or "header_checks" in p]


@pytest.mark.parametrize(
    "policy",
    [
        {"blocked_extensions": ["exe\n/^Subject:/ HOLD"]},
        {"blocked_extensions": ["ex e"]},
        {"blocked_mime_types": ['application/x"; evil']},
        {"blocked_mime_types": ["text/plain\nX-UMS-Hold: spam"]},
        {"sender_allow": ["bob;x@example.com"]},
        {"sender_block": ["bob@exa mple.com"]},
        {"sender_block": ['"quoted"@example.com']},
        {"sender_block": ["@bad..domain"]},
        {"spam_hold_score": "8; rm"},
    ],
)
def test_unsafe_policy_values_are_refused(policy: dict) -> None:
    with pytest.raises(ValueError):
        POSTFIX.render(_state(policy))


def test_policy_values_are_normalised() -> None:
    config = filtering.filter_config(
        _state(
            {
                "blocked_extensions": [".EXE", "scr"],
                "blocked_mime_types": ["Application/X-Msdownload"],
                "sender_allow": ["Friend@Partner.Example", "@trusted.example"],
                "sender_block": ["spam.example"],
            }
        )
    )
    policy = config["policies"][config["domains"]["d0.example"]]
    assert policy["blocked_extensions"] == ["exe", "scr"]
    assert policy["blocked_mime_types"] == ["application/x-msdownload"]
    assert policy["sender_allow"] == ["@trusted.example", "friend@partner.example"]
    assert policy["sender_block"] == ["spam.example"]
    with pytest.raises(safe.UnsafeName):
        bad = _state({})
        bad.settings["spam_subject_tag"] = "[SPAM]\nBcc: x"
        filtering.filter_config(bad)


# --------------------------------------------------------------------------- node-side logic


@pytest.fixture(scope="module")
def node_filter() -> ModuleType:
    path = Path(filtering.__file__).parent / "filter" / "ums_filter.py"
    spec = importlib.util.spec_from_file_location("ums_filter_under_test", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _with_attachment(name: str, ctype: str = "application/octet-stream") -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@b.example", "c@d.example", "x"
    message.set_content("see attached")
    maintype, subtype = ctype.split("/")
    message.add_attachment(b"MZ\x90\x00binary", maintype=maintype, subtype=subtype, filename=name)
    return message.as_bytes()


def test_attachment_check(node_filter: ModuleType) -> None:
    policy = {"blocked_extensions": ["exe"], "blocked_mime_types": ["application/x-msdownload"]}
    assert node_filter.blocked_attachment(_with_attachment("Invoice.EXE."), policy) == (
        "Invoice.EXE.",
        "application/octet-stream",
    )
    assert node_filter.blocked_attachment(
        _with_attachment("a.bin", "application/x-msdownload"), policy
    ) == ("a.bin", "application/x-msdownload")
    assert node_filter.blocked_attachment(_with_attachment("report.pdf"), policy) is None
    # The recorded name cannot break the X-UMS-Hold header's fields.
    assert node_filter.hold_value("attachment", attachment="a;b\r\nX-Evil: 1.exe") == (
        "attachment; attachment=abX-Evil: 1.exe"
    )


def test_sender_lists_and_reject_semantics(node_filter: ModuleType) -> None:
    match = node_filter.sender_matches
    assert match("bob@spam.example", ["spam.example"])
    assert match("bob@mx.spam.example", ["spam.example"])
    assert not match("bob@mx.spam.example", ["@spam.example"])
    assert match("bob@spam.example", ["bob@spam.example"])
    assert not match("alice@spam.example", ["bob@spam.example"])
    assert not match("", ["spam.example"])  # the null sender (bounces)
    assert node_filter.classify(1000, {"tag": 5, "hold": 8, "reject": None}) == "hold"
    assert node_filter.classify(1000, {"tag": 5, "hold": 8, "reject": 15}) == "reject"
    assert node_filter.classify(6, {"tag": 5, "hold": 8, "reject": None}) == "tag"


def test_greylist_triplets(node_filter: ModuleType, tmp_path: Path) -> None:
    db = node_filter.open_greylist_db(str(tmp_path / "grey.sqlite"))
    request = {"client_address": "192.0.2.7", "sender": "a@b.example", "recipient": "c@d.example"}
    verdict = node_filter.greylist_verdict
    assert verdict(db, request, 60, 1000.0).startswith("DEFER_IF_PERMIT")
    assert verdict(db, request, 60, 1030.0).startswith("DEFER_IF_PERMIT")  # too early
    same_net = {**request, "client_address": "192.0.2.99"}
    assert verdict(db, same_net, 60, 1061.0) == "DUNNO"  # a pool of the same /24 retries
    other = {**request, "recipient": "e@d.example"}
    assert verdict(db, other, 60, 1061.0).startswith("DEFER_IF_PERMIT")
    assert isinstance(db, sqlite3.Connection)


# --------------------------------------------------------------------------- real nodes

FILTER_PRIVATE_PATHS = (
    *MAIL_PRIVATE_PATHS,
    "/etc/spamassassin",
    "/run/spamd",
    "/etc/clamav",
    "/var/lib/clamav",
    "/run/clamav",
    "/var/log/clamav",
    "/var/lib/ums-filter",
)
needs_filters = pytest.mark.skipif(
    not (shutil.which("spamd") and shutil.which("clamd") and shutil.which("sigtool")),
    reason="spamd, clamd and sigtool are installed by scripts/install-test-packages.sh",
)


@pytest.fixture
def filter_services(monkeypatch: pytest.MonkeyPatch, settings) -> None:
    monkeypatch.setattr(registry, "SERVICES", [SPAMASSASSIN, CLAMAV, COURIER, POSTFIX])
    settings.UMS_CONVERGE = {
        "postfix_maillog_file": "/var/spool/postfix/maillog",
        "spam_network_checks": False,
        "greylist_delay": GREYLIST_DELAY,
    }
    settings.UMS_AUTO_CONVERGE = True
    settings.UMS_CONVERGE_ON_APPROVAL = True


def local_clamav_database(tnode: TestNode) -> None:
    """The node's ClamAV database: only the EICAR signature (no download here).

    Also used by the demo nodes (spamhold/demo/nodes/keeper.py)."""
    db = tnode.path("/var/lib/clamav")
    for old in db.iterdir():
        if old.is_file():
            old.unlink()
    eicar = db / "eicar.com"
    eicar.write_text(EICAR)
    signature = subprocess.run(
        ["sigtool", "--md5", str(eicar)], capture_output=True, text=True, check=True
    ).stdout
    eicar.unlink()
    (db / "local.hdb").write_text(signature)


@pytest.fixture
def filter_nodes(
    tmp_path_factory: pytest.TempPathFactory,
    controller_pkey: paramiko.PKey,  # noqa: F811
    controller_key,  # noqa: F811
    zone: Zone,  # noqa: F811
    cast: Cast,
    filter_services: None,
) -> Iterator[MailNodes]:
    """Like conftest's ``mail_nodes``, with spamd and clamd on the SMTP node."""
    workdir = tmp_path_factory.mktemp("filtering")
    with trusting_cluster(workdir, 2, controller_pkey, FILTER_PRIVATE_PATHS) as cluster:
        smtp, imap = cluster.nodes
        local_clamav_database(smtp)
        imap_node = approved_node(zone, cast, imap, ["imap"])
        smtp_node = approved_node(zone, cast, smtp, ["smtp"])
        yield MailNodes(cluster, smtp, imap, smtp_node, imap_node)


def _port_open(nodes: MailNodes, port: int) -> bool:
    probe = nodes.smtp.exec_in_node(
        ["python3", "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}), 5)"],
        check=False,
    )
    return probe.returncode == 0


def wait_for_scanners(nodes: MailNodes, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _port_open(nodes, SPAMD_PORT) and _port_open(nodes, 3310):
            return
        time.sleep(1)
    raise AssertionError(f"spamd/clamd not listening on the SMTP node:\n{_logs(nodes)}")


def _logs(nodes: MailNodes) -> str:
    log = nodes.smtp.path("/var/spool/postfix/maillog")
    clam = nodes.smtp.path("/var/log/clamav/clamav.log")
    return (
        f"--- smtp maillog ---\n{log.read_text()[-6000:] if log.exists() else ''}\n"
        f"--- clamd ---\n{clam.read_text()[-2000:] if clam.exists() else ''}"
    )


def send_raw(nodes: MailNodes, sender: str, to: str, data: bytes) -> None:
    with smtplib.SMTP(nodes.smtp.address, 25, timeout=120) as smtp:
        smtp.sendmail(sender, [to], data)


def message(marker: str, body: str, sender: str = "bob@outside.test", **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, f"alice@{DOMAIN}", marker
    msg["Date"] = "Tue, 01 Oct 2024 10:00:00 +0000"
    msg["Message-ID"] = f"<{marker}@outside.test>"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()


def queue(nodes: MailNodes) -> list[dict]:
    out = nodes.smtp.exec_in_node(["postqueue", "-j"]).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def held_with(nodes: MailNodes, marker: str, timeout: float = 120) -> tuple[str, str]:
    """(queue id, headers) of the held message whose subject carries ``marker``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for item in queue(nodes):
            if item.get("queue_name") != "hold":
                continue
            headers = nodes.smtp.exec_in_node(["postcat", "-hq", item["queue_id"]]).stdout
            if marker in headers:
                return item["queue_id"], headers
        time.sleep(0.5)
    raise AssertionError(f"{marker} not in the hold queue: {queue(nodes)}\n{_logs(nodes)}")


def delivered(nodes: MailNodes, marker: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        box = maildir(nodes, "alice")
        if box.is_dir():
            for item in box.iterdir():
                text = item.read_text(errors="replace")
                if marker in text:
                    return text
        time.sleep(0.3)
    raise AssertionError(f"{marker} not delivered; queue {queue(nodes)}\n{_logs(nodes)}")


def not_anywhere(nodes: MailNodes, marker: str) -> None:
    """Neither delivered nor queued on the SMTP node."""
    box = maildir(nodes, "alice")
    if box.is_dir():
        assert not [p for p in box.iterdir() if marker in p.read_text(errors="replace")]
    for item in queue(nodes):
        headers = nodes.smtp.exec_in_node(["postcat", "-hq", item["queue_id"]]).stdout
        assert marker not in headers, item


def hold_header(headers: str) -> str:
    lines = [line for line in headers.splitlines() if line.lower().startswith("x-ums-hold:")]
    assert len(lines) == 1, headers
    return lines[0].split(":", 1)[1].strip()


def send_when_ready(nodes: MailNodes, sender: str, to: str, data: bytes) -> None:
    """Send, retrying 4xx while the scanners finish starting (they load rules/signatures)."""
    deadline = time.monotonic() + 300
    while True:
        try:
            send_raw(nodes, sender, to, data)
            return
        except smtplib.SMTPRecipientsRefused as exc:
            code = max(c for c, _msg in exc.recipients.values())
            if code >= 500 or time.monotonic() > deadline:
                raise
            time.sleep(2)
        except smtplib.SMTPDataError as exc:
            if exc.smtp_code >= 500 or time.monotonic() > deadline:
                raise
            time.sleep(2)


@needs_filters
@pytest.mark.nodes
@pytest.mark.django_db(transaction=True)
def test_filtering_on_real_nodes(cast: Cast, filter_nodes: MailNodes) -> None:
    nodes = filter_nodes
    client, domain = setup_mail(cast)
    wait_for_scanners(nodes)

    # Clean mail is delivered, scored by spamd.
    send_when_ready(nodes, "bob@outside.test", f"alice@{DOMAIN}", message("mk-clean", "Lunch?"))
    text = delivered(nodes, "mk-clean")
    assert "X-Spam-Score: " in text and "X-UMS-Hold" not in text

    # GTUBE with the product's default thresholds: held for review, not refused.
    send_raw(nodes, "bob@outside.test", f"alice@{DOMAIN}", message("mk-gtube", GTUBE))
    queue_id, headers = held_with(nodes, "mk-gtube")
    assert len(queue_id) > 11  # long queue ids: never reused
    value = hold_header(headers)
    assert value.startswith("spam; score=") and "GTUBE" in value.split("rules=")[1]
    assert float(value.split("score=")[1].split(";")[0]) >= 1000

    # A forged X-UMS-Hold on clean mail neither holds it nor reaches the mailbox.
    forged = message("mk-forged", "Hello again", X_UMS_Hold="virus; virus=Fake")
    send_raw(nodes, "bob@outside.test", f"alice@{DOMAIN}", forged)
    text = delivered(nodes, "mk-forged")
    assert "X-UMS-Hold" not in text and "virus=Fake" not in text

    # A real multipart message with an .exe attachment is held (default blocked list).
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "bob@outside.test", f"alice@{DOMAIN}", "mk-exe"
    msg.set_content("The invoice is attached.")
    msg.add_attachment(
        b"MZ\x90\x00\x03binary", maintype="application", subtype="octet-stream",
        filename="invoice;2024.exe",
    )  # fmt: skip
    send_raw(nodes, "bob@outside.test", f"alice@{DOMAIN}", msg.as_bytes())
    _qid, headers = held_with(nodes, "mk-exe")
    assert hold_header(headers) == (
        "attachment; attachment=invoice2024.exe; type=application/octet-stream"
    )

    # EICAR: clamd finds it; held with the signature name.
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "bob@outside.test", f"alice@{DOMAIN}", "mk-eicar"
    msg.set_content("Test file attached.")
    msg.add_attachment(EICAR.encode(), maintype="text", subtype="plain", filename="test.txt")
    send_raw(nodes, "bob@outside.test", f"alice@{DOMAIN}", msg.as_bytes())
    _qid, headers = held_with(nodes, "mk-eicar")
    value = hold_header(headers)
    assert value.startswith("virus; virus=") and "eicar" in value.lower(), value

    # An allow-listed sender skips the spam hold (still scored); greylisting on.
    response = client.patch(
        reverse("mail-domain-policy-detail", args=[domain["id"]]),
        {"senderAllow": ["friend@partner.test"], "greylisting": True},
        format="json",
    )
    assert response.status_code == 200, response.content
    send_when_ready(nodes, "friend@partner.test", f"alice@{DOMAIN}", message("mk-allow", GTUBE))
    text = delivered(nodes, "mk-allow")
    assert "X-Spam-Score: 1" in text and "X-UMS-Hold" not in text

    # Greylisting: a new (client, sender, recipient) is refused with 450, accepted after
    # the delay.
    grey = message("mk-grey", "first contact", sender="new@stranger.test")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send_raw(nodes, "new@stranger.test", f"alice@{DOMAIN}", grey)
    code, reply = refused.value.recipients[f"alice@{DOMAIN}"]
    assert code == 450 and b"Greylisted" in reply
    time.sleep(GREYLIST_DELAY + 1)
    send_raw(nodes, "new@stranger.test", f"alice@{DOMAIN}", grey)
    delivered(nodes, "mk-grey")

    # spamd down: the message is deferred (4xx to the client, which keeps it), never
    # accepted unscanned, bounced or dropped.
    pid = int(nodes.smtp.path(SPAMD_PIDFILE).read_text().strip())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while _port_open(nodes, SPAMD_PORT) and time.monotonic() < deadline:
        time.sleep(0.5)
    with pytest.raises(smtplib.SMTPDataError) as deferred:
        send_raw(nodes, "friend@partner.test", f"alice@{DOMAIN}", message("mk-down", "hi"))
    assert deferred.value.smtp_code == 451, deferred.value
    time.sleep(2)
    not_anywhere(nodes, "mk-down")
    nodes.smtp.exec_in_node(SPAMASSASSIN.spamd_argv(), timeout=300)
    wait_for_scanners(nodes)
    send_when_ready(nodes, "friend@partner.test", f"alice@{DOMAIN}", message("mk-down", "hi"))
    delivered(nodes, "mk-down")
