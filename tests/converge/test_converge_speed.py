"""What the fast converge path relies on, proved on real nodes.

* authdaemond is not restarted when only the userdb changed: authuserdb reopens the
  renamed ``userdb.dat`` by itself, so ``authtest`` sees a new mailbox and a changed
  password at once, and the daemon keeps its pid;
* the Courier policy pass after a converge touches only mailboxes whose policy line
  changed; the cron job's full pass still repairs the rest;
* renderers refuse a name ending in a newline (``$`` in ``re.match`` accepted it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from django.urls import reverse

from deploy.services.courier import SERVICE as COURIER
from deploy.services.postfix import SERVICE as POSTFIX
from deploy.services.postfix.safe import UnsafeName
from tests.fixtures import Cast

from .conftest import MailNodes
from .test_courier_access import add_mailbox, maildir, patch_mailbox, run_policy
from .test_mail_flow import DOMAIN, PASSWORD, assert_jobs_succeeded, setup_mail
from .test_render import state

AUTH_PID = "/run/courier/authdaemon/pid"
NEW_PASSWORD = "Copper-Lantern-Meadow-42"


def authtest(tnode, address: str, password: str) -> bool:
    result = tnode.exec_in_node(["authtest", address, password], check=False, timeout=60)
    return result.returncode == 0 and "Authentication succeeded" in result.stdout


def auth_pid(tnode) -> str:
    return tnode.path(AUTH_PID).read_text().strip()


@pytest.mark.nodes
@pytest.mark.django_db(transaction=True)
def test_new_mailbox_and_new_password_authenticate_without_restarting_authdaemond(
    cast: Cast, mail_nodes: MailNodes
) -> None:
    client, domain = setup_mail(cast)
    nodes = (mail_nodes.smtp, mail_nodes.imap)  # SASL on one, IMAP logins on the other
    pids = {t.name: auth_pid(t) for t in nodes}
    carol = f"carol@{DOMAIN}"
    for tnode in nodes:
        assert not authtest(tnode, carol, PASSWORD)

    mailbox_id = add_mailbox(client, domain, "carol")
    assert_jobs_succeeded()
    for tnode in nodes:
        assert authtest(tnode, carol, PASSWORD), tnode.name
        assert auth_pid(tnode) == pids[tnode.name], f"authdaemond restarted on {tnode.name}"

    response = client.post(
        reverse("mail-mailbox-set-password", args=[mailbox_id]),
        {"password": NEW_PASSWORD},
        format="json",
    )
    assert response.status_code == 204, response.content
    assert_jobs_succeeded()
    for tnode in nodes:
        assert authtest(tnode, carol, NEW_PASSWORD), tnode.name
        assert not authtest(tnode, carol, PASSWORD), tnode.name
        assert auth_pid(tnode) == pids[tnode.name], f"authdaemond restarted on {tnode.name}"


def _owner(path: Path) -> int:
    return path.stat().st_uid


@pytest.mark.nodes
@pytest.mark.django_db(transaction=True)
def test_policy_pass_after_a_change_touches_only_changed_mailboxes(
    cast: Cast, mail_nodes: MailNodes
) -> None:
    client, domain = setup_mail(cast)
    add_mailbox(client, domain, "bob")
    assert_jobs_succeeded()
    alice = mail_nodes.imap.path(maildir(mail_nodes, "alice"))
    bob = mail_nodes.imap.path(maildir(mail_nodes, "bob"))
    assert _owner(alice) == 5000 and _owner(bob) == 5000

    # Behind the controller's back: alice's Maildir as a lock leaves it (root-owned).
    mail_nodes.imap.exec_in_node(["chown", "0", maildir(mail_nodes, "alice")])
    patch_mailbox(client, "bob", readOnly=True)
    # bob's line changed: locked now. alice's line did not: the converge left her alone.
    assert _owner(bob) == 0
    assert (bob / "courierimapacl").read_text() == "owner alrs\n"
    assert _owner(alice) == 0

    # The hourly full pass (cron) repairs what changed behind our back...
    result = run_policy(mail_nodes, "enforce")
    assert result.returncode == 0, result.stderr
    assert _owner(alice) == 5000
    assert _owner(bob) == 0
    # ...and a --changed run with nothing changed does nothing at all.
    mail_nodes.imap.exec_in_node(["chown", "0", maildir(mail_nodes, "alice")])
    result = run_policy(mail_nodes, "enforce", "--changed")
    assert result.returncode == 0, result.stderr
    assert _owner(alice) == 0
    run_policy(mail_nodes, "enforce")


@pytest.mark.parametrize("local", ["alice\n", "alice\r"])
def test_renderers_refuse_a_local_part_with_a_line_break(local: str) -> None:
    for service in (POSTFIX, COURIER):
        with pytest.raises(UnsafeName):
            service.render(state(local=local))


def test_renderers_refuse_an_address_that_is_not_its_local_part_at_its_domain() -> None:
    crafted = state()
    good = crafted.mailboxes[0]
    crafted.mailboxes[0] = dataclasses.replace(
        good, email="alice@ok.example\nrelayhost = evil.example"
    )
    for service in (POSTFIX, COURIER):
        with pytest.raises(UnsafeName):
            service.render(crafted)
