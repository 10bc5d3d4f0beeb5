"""Webmail end to end on real daemons, in a real browser.

Four namespaced nodes: IMAP (Courier), SMTP (Postfix), webmail (Debian's Roundcube under
PHP-FPM behind the node's own nginx, all converged by deploy/services/roundcube) and a
load balancer (nginx terminating TLS, deploy/services/nginx). Debian's Chromium opens
``https://webmail.<domain>/`` through the load balancer, logs in with Roundcube's own
form using a mailbox's password, sends a message (submission on 587 of the SMTP node),
reads one (IMAP on the domain's IMAP node), sees the domain's branding name and the
global address book; a mailbox whose webmail access is denied cannot log in, and an
open session ends when webmail is denied to its mailbox.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pyotp
import pytest
from django.db import connections
from django.urls import reverse

from deploy.models import NodeConvergeState
from deploy.services import registry
from deploy.services.courier import SERVICE as COURIER
from deploy.services.lda import SERVICE as LDA
from deploy.services.nginx import NginxService
from deploy.services.postfix import SERVICE as POSTFIX
from deploy.services.roundcube import SERVICE as ROUNDCUBE
from servers.models import Zone
from tests.faults.nodes import GATE_DIR, kill_sshd, start_sshd
from tests.fixtures import Cast, token_client
from tests.servers.conftest import controller_key, controller_pkey, zone  # noqa: F401
from ums.models import Job

from .conftest import MAIL_PRIVATE_PATHS, _alive, approved_node, trusting_cluster
from .test_mail_flow import send

playwright_sync = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.nodes, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DOMAIN = "webmail-rc.test"
HOST = f"webmail.{DOMAIN}"
BRAND = "Tulip Mail"
PASSWORD = "Quartz-Meadow-Lantern-71"
LB_RUN = "/var/lib/ums-lb"
WEBMAIL_PRIVATE_PATHS = (
    "/etc/roundcube",
    "/var/lib/roundcube",
    "/run/ums-webmail",
    "/var/log/ums-webmail",
    "/var/lib/ums-webmail",
    LB_RUN,
)


# Hangs "nginx -s reload" (activation) while the gate file exists; every other nginx
# command (the staged tree's check) runs at once.
RELOAD_GATE = """#!/bin/sh
if [ "$1" = "-s" ] && [ -e {dir}/nginx.gate ]; then
  : > {dir}/nginx.waiting
  while [ -e {dir}/nginx.gate ]; do sleep 0.2; done
fi
exec /usr/sbin/nginx "$@"
"""


def self_signed(workdir: Path) -> dict[str, str]:
    key, crt = workdir / "lb.key", workdir / "lb.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=DNS:{HOST}",
         "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True,
    )  # fmt: skip
    return {"cert": crt.read_text(), "key": key.read_text()}


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with playwright_sync.sync_playwright() as p:
        yield p
    connections.close_all()


def assert_jobs_succeeded() -> None:
    failed = [
        f"{j.kind} {j.title}: {j.error[-3000:]}\n{j.log}"[-6000:]
        for j in Job.objects.filter(status=Job.FAILED)
    ]
    assert not failed, "\n".join(failed)


def wait_for_message(imap: Any, local: str, marker: str, timeout: float = 60) -> str:
    """The message with ``marker`` in ``local``'s Maildir on the IMAP node."""
    deadline = time.monotonic() + timeout
    box = imap.path(f"/var/mail/vhosts/{DOMAIN}/{local}/Maildir/new")
    while time.monotonic() < deadline:
        for item in box.iterdir() if box.is_dir() else ():
            text = item.read_text(errors="replace")
            if marker in text:
                return text
        time.sleep(0.3)
    raise AssertionError(f"{marker} not delivered to {local}@{DOMAIN}")


def login(page: Any, address: str, *, code: str = "") -> None:
    page.goto(f"https://{HOST}/")
    page.fill("#rcmloginuser", address)
    page.fill("#rcmloginpwd", PASSWORD)
    if code:
        page.fill("#rcmlogintotp", code)
    page.click("#rcmloginsubmit")
    page.wait_for_load_state("networkidle")


def test_roundcube_login_send_read_branding_address_book_and_denied_mailbox(
    cast: Cast,
    tmp_path_factory: pytest.TempPathFactory,
    controller_pkey: paramiko.PKey,  # noqa: F811
    controller_key: Any,  # noqa: F811
    zone: Zone,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    browser: Any,
) -> None:
    workdir = tmp_path_factory.mktemp("webmail")
    lb = NginxService(runtime_dir=LB_RUN)
    monkeypatch.setattr(registry, "SERVICES", [COURIER, LDA, POSTFIX, ROUNDCUBE, lb])
    settings.UMS_CONVERGE = {
        "postfix_maillog_file": "/var/spool/postfix/maillog",
        "lda_log_file": "/var/lib/ums-lda/lda.log",
        "content_filter": False,
        "web_hostnames": {"webmail": HOST},
        "tls_certificates": {"default": self_signed(workdir)},
    }
    settings.UMS_AUTO_CONVERGE = True
    settings.UMS_CONVERGE_ON_APPROVAL = True
    private = (*MAIL_PRIVATE_PATHS, *WEBMAIL_PRIVATE_PATHS)
    with trusting_cluster(workdir, 4, controller_pkey, private) as cluster:
        imap, smtp, web, balancer = cluster.nodes
        approved_node(zone, cast, imap, ["imap"])
        approved_node(zone, cast, smtp, ["smtp"])
        web_node = approved_node(zone, cast, web, ["webmail"])
        approved_node(zone, cast, balancer, ["loadbalancer"])
        assert_jobs_succeeded()

        # Mail set up through the API; each change converges the nodes serving the tree.
        client = token_client(cast.sub_admin)
        response = client.post(
            reverse("customer-list"),
            {"name": "Webmail Customer", "parent": cast.government.pk},
            format="json",
        )
        assert response.status_code == 201, response.content
        response = client.post(
            reverse("mail-domain-list"),
            {"name": DOMAIN, "customer": response.json()["id"], "webmailName": BRAND},
            format="json",
        )
        assert response.status_code == 201, response.content
        domain_id = response.json()["id"]
        mailboxes = {}
        for local, extra in (
            ("alice", {"displayName": "Alice Archer"}),
            ("bob", {"displayName": "Bob Baker"}),
            ("carol", {"protocolAccess": {"webmail": "deny"}}),
        ):
            response = client.post(
                reverse("mail-mailbox-list"),
                {"domain": domain_id, "localPart": local, "password": PASSWORD, **extra},
                format="json",
            )
            assert response.status_code == 201, response.content
            mailboxes[local] = response.json()["id"]
        assert_jobs_succeeded()
        allowed = web.path("/etc/roundcube/ums/allowed.txt").read_text().split()
        assert allowed == [f"alice@{DOMAIN}", f"bob@{DOMAIN}"]

        send_from_outside = "marker-webmail-inbound"
        from tests.converge.conftest import MailNodes

        nodes = MailNodes(cluster, smtp, imap, None, None)  # type: ignore[arg-type]
        send(nodes, f"alice@{DOMAIN}", send_from_outside)
        wait_for_message(imap, "alice", send_from_outside)

        chromium = browser.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[*LAUNCH_ARGS, f"--host-resolver-rules=MAP {HOST} {balancer.address}"],
        )
        try:
            context = chromium.new_context(ignore_https_errors=True)
            page = context.new_page()

            # The denied mailbox: Roundcube's form refuses it, with its password right.
            login(page, f"carol@{DOMAIN}")
            assert page.locator("#rcmloginuser").is_visible()
            assert "no webmail access" in page.content()

            # The domain's branding name, chosen by the host name before login.
            page.goto(f"https://{HOST}/")
            assert BRAND in page.title()

            # Alice logs in and reads the message delivered from outside.
            login(page, f"alice@{DOMAIN}")
            assert page.locator("#rcmloginuser").count() == 0, page.content()[-3000:]
            assert BRAND in page.title()
            row = page.locator("#messagelist tr", has_text=send_from_outside)
            row.first.wait_for(timeout=30_000)
            row.first.dblclick()
            page.wait_for_load_state("networkidle")
            body = (
                page.frame_locator("#messagecontframe")
                if page.locator("#messagecontframe").count()
                else page
            )
            body.locator("body", has_text=f"hello {send_from_outside}").first.wait_for(
                timeout=30_000
            )

            # She writes to Bob: submission on 587 with her own login.
            page.goto(f"https://{HOST}/?_task=mail&_action=compose")
            page.locator("ul.recipient-input input").first.fill(f"bob@{DOMAIN}")
            page.locator("ul.recipient-input input").first.press("Enter")
            page.fill("#compose-subject", "marker-webmail-outbound")
            page.fill("#composebody", "sent from Roundcube")
            page.locator("button.send, a.send").first.click()
            page.wait_for_url("**_task=mail**", timeout=30_000)
            wait_for_message(imap, "bob", "marker-webmail-outbound")

            # The global address book: read-only, with Bob in it.
            page.goto(f"https://{HOST}/?_task=addressbook")
            page.get_by_text("Global address book").first.click()
            page.locator("#contacts-table", has_text="Bob Baker").first.wait_for(timeout=30_000)

            # Two-factor login: Bob gets a TOTP seed; his password alone no longer opens
            # a session, the current code does, and the same code never works twice.
            response = client.post(
                reverse("mail-mailbox-webmail-two-factor", args=[mailboxes["bob"]])
            )
            assert response.status_code == 201, response.content
            seed = response.json()["secret"]
            assert_jobs_succeeded()
            bob = chromium.new_context(ignore_https_errors=True).new_page()
            login(bob, f"bob@{DOMAIN}")
            assert bob.locator("#rcmloginuser").is_visible()
            assert "one-time code is missing" in bob.content()
            code = pyotp.TOTP(seed).now()
            login(bob, f"bob@{DOMAIN}", code=code)
            bob.locator("#messagelist").wait_for(timeout=30_000)
            bob.context.clear_cookies()
            login(bob, f"bob@{DOMAIN}", code=code)
            assert "already used" in bob.content()
            bob.context.close()

            # Webmail denied to Alice now: converge updates the allow list, and her open
            # session ends at its next request.
            response = client.patch(
                reverse("mail-mailbox-detail", args=[mailboxes["alice"]]),
                {"protocolAccess": {"webmail": "deny"}},
                format="json",
            )
            assert response.status_code == 200, response.content
            assert_jobs_succeeded()
            assert f"alice@{DOMAIN}" not in web.path("/etc/roundcube/ums/allowed.txt").read_text()
            page.goto(f"https://{HOST}/?_task=mail")
            page.locator("#rcmloginuser").wait_for(timeout=30_000)

            # PHP-FPM and nginx die on the webmail node: the next converge (nothing else
            # changed) finds them down and starts them again with their live files.
            for name in ("php-fpm", "nginx"):
                pid = int(web.path(f"/run/ums-webmail/{name}.pid").read_text())
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 20
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert not _alive(pid), name
            assert page.goto(f"https://{HOST}/").status == 502
            response = client.post(
                reverse("node-converge", args=[web_node.pk]), {"dryRun": False}, format="json"
            )
            assert response.status_code == 202, response.content
            job = Job.objects.get(pk=response.json()["id"])
            assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
            assert len(job.result["prepared"]["roundcube"]) == 2, job.result
            page.goto(f"https://{HOST}/")
            page.locator("#rcmloginuser").wait_for(timeout=30_000)

            # The webmail node's sshd dies in the middle of a converge, after the new files
            # are installed and before nginx reloads (a gate holds "nginx -s reload"). Once
            # sshd is back, the next converge finds files current but the daemons loaded
            # with older ones, reloads them, and the node ends as desired.
            gate = web.path(f"{GATE_DIR}/nginx.gate")
            waiting = web.path(f"{GATE_DIR}/nginx.waiting")
            wrapper = web.path(f"{GATE_DIR}/nginx")
            wrapper.write_text(RELOAD_GATE.format(dir=GATE_DIR))
            wrapper.chmod(0o755)
            gate.touch()
            renamed: dict[str, Any] = {}

            def rename() -> None:
                try:
                    renamed["response"] = client.patch(
                        reverse("mail-domain-detail", args=[domain_id]),
                        {"webmailName": "Tulip Webmail"},
                        format="json",
                    )
                finally:
                    connections.close_all()

            thread = threading.Thread(target=rename)
            thread.start()
            deadline = time.monotonic() + 120
            while not waiting.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert waiting.exists(), "the converge never reached nginx's reload"
            kill_sshd(web)
            gate.unlink()
            thread.join(timeout=120)
            assert renamed["response"].status_code == 200  # the change itself is saved
            failed = Job.objects.filter(
                kind="node.converge", object_id=str(web_node.pk), status=Job.FAILED
            )
            assert failed.exists(), "the converge cut off by the dead sshd did not fail"
            state = NodeConvergeState.objects.get(node=web_node)
            assert state.desired_generation > state.applied_generation
            wrapper.unlink()
            start_sshd(web)
            response = client.post(
                reverse("node-converge", args=[web_node.pk]), {"dryRun": False}, format="json"
            )
            job = Job.objects.get(pk=response.json()["id"])
            assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
            assert "roundcube" in job.result["reloaded"], job.result
            state.refresh_from_db()
            assert state.desired_generation == state.applied_generation
            assert not list(web.path("/etc/roundcube").glob(".ums-stage-*"))
            page.goto(f"https://{HOST}/")
            assert "Tulip Webmail" in page.title()
            context.close()
        finally:
            chromium.close()
