"""Sieve filters, auto-responders and quota take effect on delivery (Dovecot LDA).

End to end on real daemons: rules and auto-responders made through the API are
converged onto the IMAP node, Postfix pipes mail into dovecot-lda with Pigeonhole, and
what the user sees is checked where they would see it: IMAP folders over 993, the
replies in the sender's own (hosted) mailbox, the bounce of an over-quota message.
The render tests at the end need no nodes.
"""

from __future__ import annotations

import imaplib
import smtplib
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest
from django.urls import reverse
from sievelib.parser import Parser

from deploy.services import registry
from deploy.services.base import AliasData, DesiredState, DomainData, MailboxData, NodeView
from deploy.services.courier import SERVICE as COURIER
from deploy.services.lda import SERVICE as LDA
from deploy.services.lda import vacation
from deploy.services.postfix import SERVICE as POSTFIX
from tests.fixtures import Cast

from .conftest import MailNodes
from .test_mail_flow import DOMAIN, PASSWORD, assert_jobs_succeeded, setup_mail, tls

# conftest's mail_nodes converges Courier, the LDA and Postfix; the LDA logs here.
LDA_LOG = "/var/lib/ums-lda/lda.log"


# ----------------------------------------------------------------------------- helpers


def box(nodes: MailNodes, local: str, folder: str = "") -> Path:
    """A mailbox's Maildir (``folder`` "Reports" is Maildir++ ``.Reports``)."""
    path = f"/var/mail/vhosts/{DOMAIN}/{local}/Maildir"
    return nodes.imap.path(f"{path}/.{folder}" if folder else path)


def messages(nodes: MailNodes, local: str, folder: str = "") -> list[str]:
    texts = []
    for sub in ("new", "cur"):
        directory = box(nodes, local, folder) / sub
        if directory.is_dir():
            texts += [p.read_text(errors="replace") for p in sorted(directory.iterdir())]
    return texts


def diagnostics(nodes: MailNodes) -> str:
    from ums.models import Job

    parts = [
        "--- failed jobs ---",
        *(f"{j.kind} {j.title}: {j.error[-3000:]}" for j in Job.objects.filter(status=Job.FAILED)),
    ]
    for title, tnode, path in (
        ("smtp maillog", nodes.smtp, "/var/spool/postfix/maillog"),
        ("imap maillog", nodes.imap, "/var/spool/postfix/maillog"),
        ("lda log", nodes.imap, LDA_LOG),
    ):
        file = tnode.path(path)
        parts += [f"--- {title} ---", file.read_text()[-6000:] if file.exists() else ""]
    return "\n".join(parts)


def wait_until(nodes: MailNodes, what: str, check: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}\n{diagnostics(nodes)}")


def wait_for(nodes: MailNodes, local: str, marker: str, folder: str = "") -> str:
    found: list[str] = []

    def check() -> bool:
        found[:] = [t for t in messages(nodes, local, folder) if marker in t]
        return bool(found)

    wait_until(nodes, f"{marker} in {local}/{folder or 'INBOX'}", check)
    return found[0]


def queue_empty(nodes: MailNodes) -> bool:
    result = nodes.imap.exec_in_node(["postqueue", "-j"], check=False)
    return result.returncode == 0 and not result.stdout.strip()


def send(
    nodes: MailNodes,
    sender: str,
    to: str,
    subject: str,
    *,
    headers: dict[str, str] | None = None,
    body: str = "",
) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body or f"hello {subject}\n")
    # Straight to the IMAP node, as the MX relays it: delivery is what is under test
    # here, and the MX's content filter (spamd, clamd) has tests of its own.
    with smtplib.SMTP(nodes.imap.address, 25, timeout=60) as smtp:
        smtp.send_message(message)


def replies(nodes: MailNodes, local: str) -> list[str]:
    return [t for t in messages(nodes, local) if "Auto-Submitted: auto-replied" in t]


def add_mailbox(client, domain: dict, local: str, **extra: object) -> int:
    response = client.post(
        reverse("mail-mailbox-list"),
        {"domain": domain["id"], "localPart": local, "password": PASSWORD, **extra},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()["id"]


def mailbox_id(email: str) -> int:
    from mail.models import Mailbox

    return Mailbox.objects.get(email=email).pk


# ------------------------------------------------------------------------ node tests


@pytest.mark.nodes
@pytest.mark.django_db(transaction=True)
def test_rule_editor_filter_files_into_an_imap_folder_and_quota_is_enforced(
    cast: Cast, mail_nodes: MailNodes
) -> None:
    from ums.models import Job

    client, domain = setup_mail(cast)
    alice = mailbox_id(f"alice@{DOMAIN}")
    rules = [
        {
            "name": "Reports",
            "match": "all",
            "conditions": [{"field": "subject", "op": "contains", "value": "report"}],
            "actions": [{"type": "fileinto", "folder": "Reports"}, {"type": "stop"}],
        }
    ]
    response = client.post(
        reverse("mail-sieve-script-list"),
        {"mailbox": alice, "name": "Sort reports", "mode": "rules", "rules": rules},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert_jobs_succeeded()

    send(mail_nodes, "boss@outside.test", f"alice@{DOMAIN}", "Monthly report marker-rule-1")
    send(mail_nodes, "boss@outside.test", f"alice@{DOMAIN}", "Lunch marker-rule-2")
    wait_for(mail_nodes, "alice", "marker-rule-1", folder="Reports")
    wait_for(mail_nodes, "alice", "marker-rule-2")

    with imaplib.IMAP4_SSL(mail_nodes.imap.address, 993, ssl_context=tls()) as imap:
        imap.login(f"alice@{DOMAIN}", PASSWORD)
        _typ, listing = imap.list()
        assert any(b'"INBOX.Reports"' in line or b" INBOX.Reports" in line for line in listing), (
            listing
        )
        typ, _data = imap.select("INBOX.Reports", readonly=True)
        assert typ == "OK"
        _typ, data = imap.search(None, "SUBJECT", "marker-rule-1")
        assert data[0].split(), "the matching message is not in INBOX.Reports"
        _typ, data = imap.search(None, "SUBJECT", "marker-rule-2")
        assert not data[0].split()
        imap.select("INBOX", readonly=True)
        _typ, data = imap.search(None, "SUBJECT", "marker-rule-2")
        assert data[0].split(), "the non-matching message is not in INBOX"
        _typ, data = imap.search(None, "SUBJECT", "marker-rule-1")
        assert not data[0].split(), "the matching message was also kept in INBOX"

    # Quota: a 1 MB mailbox takes a small message and refuses a 1.5 MB one; the sender
    # (a hosted mailbox, so we can read its INBOX) gets the bounce.
    add_mailbox(client, domain, "small", quotaMb=1)
    add_mailbox(client, domain, "bob")
    assert_jobs_succeeded()
    send(mail_nodes, f"bob@{DOMAIN}", f"small@{DOMAIN}", "fits marker-quota-1")
    wait_for(mail_nodes, "small", "marker-quota-1")
    send(
        mail_nodes,
        f"bob@{DOMAIN}",
        f"small@{DOMAIN}",
        "too big marker-quota-2",
        body=("x" * 76 + "\n") * 20_000,  # ~1.5 MB
    )
    bounce = wait_for(mail_nodes, "bob", "marker-quota-2")
    assert "Undelivered Mail Returned to Sender" in bounce, bounce[:2000]
    assert "Quota exceeded" in bounce, bounce[:4000]
    assert f"small@{DOMAIN}" in bounce
    assert not [t for t in messages(mail_nodes, "small") if "marker-quota-2" in t]
    wait_until(mail_nodes, "an empty queue on the IMAP node", lambda: queue_empty(mail_nodes))

    # A script the app's parser let through but Pigeonhole refuses (here: a row written
    # behind the API's back) fails the converge; the live files stay as they were and
    # the old rule keeps working.
    from mail.models import SieveScript

    live = {
        p: p.read_bytes() for p in mail_nodes.imap.path("/etc/ums-lda").rglob("*") if p.is_file()
    }
    SieveScript.objects.filter(mailbox_id=alice).update(
        script='require ["fileinto"];\nfileinto :nonsense "Reports";\n'
    )
    response = client.post(
        reverse("node-converge", args=[mail_nodes.imap_node.pk]), {}, format="json"
    )
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.FAILED, job.log
    assert "user.sieve" in job.error and "nonsense" in job.error, job.error
    after = {
        p: p.read_bytes() for p in mail_nodes.imap.path("/etc/ums-lda").rglob("*") if p.is_file()
    }
    assert after == live
    send(mail_nodes, "boss@outside.test", f"alice@{DOMAIN}", "Weekly report marker-rule-3")
    wait_for(mail_nodes, "alice", "marker-rule-3", folder="Reports")


@pytest.mark.nodes
@pytest.mark.django_db(transaction=True)
def test_auto_responder_answers_once_per_sender_and_never_lists_or_bulk(
    cast: Cast, mail_nodes: MailNodes
) -> None:
    client, domain = setup_mail(cast)
    for local in ("bob", "carol", "dave", "erin"):
        add_mailbox(client, domain, local)
    response = client.post(
        reverse("mail-autoresponder-list"),
        {
            "mailbox": mailbox_id(f"alice@{DOMAIN}"),
            "isEnabled": True,
            "subject": 'Out of office "until Monday"',
            "body": 'I am away.\n"; keep; "\nBack on Monday.',
            "intervalDays": 7,
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert_jobs_succeeded()

    send(mail_nodes, f"bob@{DOMAIN}", f"alice@{DOMAIN}", "question marker-vac-1")
    wait_for(mail_nodes, "alice", "marker-vac-1")
    wait_until(mail_nodes, "the reply to bob", lambda: bool(replies(mail_nodes, "bob")))
    reply = replies(mail_nodes, "bob")[0]
    assert 'Subject: Out of office "until Monday"' in reply, reply
    assert 'I am away.\n"; keep; "\nBack on Monday.' in reply.replace("\r\n", "\n"), reply
    assert f"From: <alice@{DOMAIN}>" in reply or f"From: alice@{DOMAIN}" in reply, reply

    # Within the interval bob gets no second reply; a list message and a bulk one get
    # none at all (carol and dave have never been answered, so only the guard can stop
    # the reply).
    send(mail_nodes, f"bob@{DOMAIN}", f"alice@{DOMAIN}", "again marker-vac-2")
    send(
        mail_nodes,
        f"carol@{DOMAIN}",
        f"alice@{DOMAIN}",
        "digest marker-vac-3",
        headers={"List-Id": "Team news <news.lists.outside.test>"},
    )
    send(
        mail_nodes,
        f"dave@{DOMAIN}",
        f"alice@{DOMAIN}",
        "offer marker-vac-4",
        headers={"Precedence": "bulk"},
    )
    for marker in ("marker-vac-2", "marker-vac-3", "marker-vac-4"):
        wait_for(mail_nodes, "alice", marker)
    # A reply those three had triggered was queued before their delivery finished;
    # erin's reply arriving and the queue draining show the node is done with them.
    send(mail_nodes, f"erin@{DOMAIN}", f"alice@{DOMAIN}", "hello marker-vac-5")
    wait_until(mail_nodes, "the reply to erin", lambda: bool(replies(mail_nodes, "erin")))
    wait_until(mail_nodes, "an empty queue on the IMAP node", lambda: queue_empty(mail_nodes))
    assert len(replies(mail_nodes, "bob")) == 1, replies(mail_nodes, "bob")
    assert replies(mail_nodes, "carol") == []
    assert replies(mail_nodes, "dave") == []
    # The LDA found everything it needs: precompiled binaries it may reuse, the userdb.
    log = mail_nodes.imap.path(LDA_LOG).read_text()
    assert "Error:" not in log and "Fatal:" not in log, log[-4000:]


# ---------------------------------------------------------------------- render tests


def _unquote(value: str) -> str:
    """A Sieve quoted string as sievelib returns it, back to its text."""
    assert value.startswith('"') and value.endswith('"'), value
    out, chars = [], iter(value[1:-1])
    for ch in chars:
        out.append(next(chars) if ch == "\\" else ch)
    return "".join(out)


def _parse(script: str) -> list:
    parser = Parser()
    assert parser.parse(script.encode()), getattr(parser, "error", script)
    return parser.result


def _commands(tree: list) -> list[str]:
    names: list[str] = []
    for command in tree:
        names.append(command.name)
        names += _commands(command.children)
    return names


TRICKY_BODY = 'Away.\n"; keep; fileinto "Evil"; "\\\n${subject} \\" text:\n.\nend'
TRICKY_SUBJECT = 'Out "of" office\r\nBcc: victim@outside.test'


def test_vacation_text_with_quotes_and_newlines_stays_data() -> None:
    script = vacation.render(
        {
            "subject": TRICKY_SUBJECT,
            "body": TRICKY_BODY,
            "interval_days": 3,
            "start_date": "2026-06-01",
            "end_date": "2026-06-30",
        },
        ["alice@example.test", "team@example.test"],
    )
    tree = _parse(script)
    # Exactly our structure: the guard, the dates, one vacation; nothing the text injected.
    assert _commands(tree) == ["require", "if", "if", "vacation"]
    action = tree[1].children[0].children[0]
    assert _unquote(action.arguments["reason"]) == TRICKY_BODY
    assert 'Out \\"of\\" office Bcc: victim@outside.test' in script  # one header line
    assert ":days 3 " in script
    assert ':addresses ["alice@example.test", "team@example.test"]' in script
    for header in ('"list-id"', '"list-unsubscribe"', '"precedence"', '"auto-submitted"'):
        assert header in script
    assert 'currentdate :value "ge" "date" "2026-06-01"' in script
    assert 'currentdate :value "le" "date" "2026-06-30"' in script


def test_vacation_refuses_a_date_that_would_break_out() -> None:
    with pytest.raises(vacation.UnsafeVacation):
        vacation.render(
            {"subject": "x", "body": "y", "interval_days": 1, "start_date": '2026-01-01" keep'},
            ["a@example.test"],
        )


def _state(**mailbox: object) -> DesiredState:
    fields = {
        "email": "alice@example.test",
        "local_part": "alice",
        "domain": "example.test",
        "password_hash": "$6$salt$hash",
        "quota_mb": 2,
        "enabled": True,
        "read_only": False,
        "can_delete": True,
        "can_send": True,
        "retention_days": 0,
        "forward_to": (),
        "forward_keep_copy": False,
        "protocols": {"imaps": True},
        **mailbox,
    }
    return DesiredState(
        node=NodeView(1, "imap1.example.test", "10.0.0.2", ("imap",), "debian", 1),
        domains=[DomainData("example.test", True, "", ("alias.test",), None, {})],
        mailboxes=[MailboxData(**fields)],  # type: ignore[arg-type]
        aliases=[AliasData("team@example.test", ("alice@example.test",), True)],
        settings={"mail_root": "/var/mail/vhosts"},
    )


def test_render_installs_the_user_script_as_data_and_one_userdb_record() -> None:
    user_script = 'require ["fileinto"];\n# "; keep\nif true { fileinto "Reports"; }\n'
    files = {
        f.path: f
        for f in LDA.render(
            _state(
                sieve_script=user_script,
                autoresponder={"subject": "Away", "body": TRICKY_BODY, "interval_days": 2},
            )
        )
    }
    base = "/etc/ums-lda/sieve/example.test/alice"
    assert files[f"{base}/user.sieve"].content == user_script.encode()
    vacation_script = files[f"{base}/vacation.sieve"].content.decode()
    assert '["alice@example.test", "alice@alias.test", "team@example.test"' in vacation_script
    users = files["/etc/ums-lda/users"]
    assert (users.mode, users.group) == (0o640, "dovecot")
    records = [line for line in users.content.decode().splitlines() if not line.startswith("#")]
    assert records == [
        "alice@example.test::5000:5000::/var/mail/vhosts/example.test/alice::"
        f"userdb_quota_rule=*:storage={2 * 1024 * 1024}B "
        f"userdb_sieve_before={base}/vacation.sieve userdb_sieve={base}/user.sieve"
    ]
    # Scripts are installed before the userdb that names them.
    paths = list(files)
    assert paths.index(f"{base}/user.sieve") < paths.index("/etc/ums-lda/users")


def test_postfix_delivers_through_the_lda_only_when_it_is_managed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = _state()
    monkeypatch.setattr(registry, "SERVICES", [COURIER, LDA, POSTFIX])
    main_cf = POSTFIX.main_cf(state)
    assert "\nvirtual_transport = dovecot\n" in main_cf
    assert "\ndovecot_destination_recipient_limit = 1\n" in main_cf
    master = POSTFIX.master_cf(state).decode()
    assert (
        "flags=DRXhu user=vmail argv=/etc/ums-lda/deliver /var/mail/vhosts ${nexthop} ${user}"
        " /usr/lib/dovecot/dovecot-lda -c /etc/ums-lda/dovecot.conf -e -f ${sender}"
        " -a ${original_recipient} -d ${user}@${nexthop}"
    ) in master
    monkeypatch.setattr(registry, "SERVICES", [COURIER, POSTFIX])
    assert "\nvirtual_transport = virtual\n" in POSTFIX.main_cf(state)
    assert "dovecot-lda" not in POSTFIX.master_cf(state).decode()
