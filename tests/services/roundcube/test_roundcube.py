"""Roundcube's rendering (deploy/services/roundcube): what reaches the webmail node.

Pure rendering plus PHP's own linter on the rendered files; the daemons themselves run in
tests/converge/test_webmail_node.py.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from pathlib import Path

import pytest
from django.urls import reverse

from audit.models import AuditRecord
from deploy import desired
from deploy.services.base import (
    CheckFailed,
    DesiredState,
    DomainData,
    MailboxData,
    NodeView,
    WebmailData,
    WebmailDomain,
)
from deploy.services.roundcube import SERVICE as ROUNDCUBE
from mail.models import Domain
from servers.choices import NodeStatus
from servers.models import Node
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain, make_mailbox
from tests.servers.conftest import zone  # noqa: F401
from tests.services.localconn import LocalConnector

NODE = NodeView(3, "web1.example.net", "10.0.0.7", ("webmail",), "debian", 1)
HASH = "$6$saltsalt$" + "a" * 86
KEY = "A" * 24


def mailbox(email: str, *, enabled: bool = True, webmail: bool = True) -> MailboxData:
    local, domain = email.split("@")
    return MailboxData(
        email, local, domain, HASH, 100, enabled, False, True, True, 0, (), True,
        {"imaps": True, "webmail": webmail},
    )  # fmt: skip


def state(**webmail: object) -> DesiredState:
    data = WebmailData(
        product_name="Acme Mail",
        des_key=KEY,
        domains=[WebmailDomain("one.example", "One Mail", 7), WebmailDomain("two.example", "", 8)],
        books={7: [{"id": "p1", "kind": "person", "email": "ann@one.example", "name": "Ann"}]},
    )
    return DesiredState(
        node=NODE,
        domains=[
            DomainData("one.example", True, "", (), None, {}, node_id=1, node_address="10.0.0.5"),
            DomainData("off.example", False, "", (), None, {}, node_id=1, node_address="10.0.0.5"),
            DomainData("two.example", True, "", (), None, {}, node_id=2, node_address="fd00::9"),
            DomainData("new.example", True, "", (), None, {}),  # not placed yet
        ],
        mailboxes=[
            mailbox("ann@one.example"),
            mailbox("bob@one.example", webmail=False),
            mailbox("cid@one.example", enabled=False),
            mailbox("dan@off.example"),
            mailbox("eve@two.example"),
        ],
        nodes_by_role={"smtp": [("mx2", "10.0.0.3"), ("mx1", "10.0.0.2")]},
        webmail=dataclasses.replace(data, **webmail),  # type: ignore[arg-type]
    )


def files(s: DesiredState) -> dict[str, bytes]:
    return {f.path: f.content for f in ROUNDCUBE.render(s)}


def test_render_allow_list_imap_map_branding_book_and_smtp() -> None:
    out = files(state())
    # Only enabled mailboxes of enabled domains with webmail allowed may log in.
    assert out["/etc/roundcube/ums/allowed.txt"] == b"ann@one.example\neve@two.example\n"
    data = json.loads(out["/etc/roundcube/ums/webmail.json"])
    assert data["default_product_name"] == "Acme Mail"
    assert data["domains"]["one.example"] == {
        "imap": "ssl://10.0.0.5:993",
        "product_name": "One Mail",
        "book": "7",
    }
    assert data["domains"]["two.example"]["imap"] == "ssl://[fd00::9]:993"
    assert "new.example" not in data["domains"]  # no IMAP node yet: nobody logs in
    assert json.loads(out["/etc/roundcube/ums/books/7.json"])[0]["email"] == "ann@one.example"
    config = out["/etc/roundcube/config.inc.php"].decode()
    assert "$config['smtp_host'] = 'tls://10.0.0.2:587';" in config  # first SMTP node
    assert "$config['plugins'] = ['ums'];" in config  # no managesieve: the portal writes Sieve
    assert f"$config['des_key'] = '{KEY}';" in config
    managed = {f.path: f for f in ROUNDCUBE.render(state())}
    secret = managed["/etc/roundcube/config.inc.php"]
    assert (secret.mode, secret.owner, secret.group) == (0o640, "root", "www-data")
    assert "/etc/roundcube/ums/plugin/ums.php" in out


def test_rendered_php_passes_php_lint(tmp_path: Path) -> None:
    out = files(state())
    for path, content in out.items():
        if path.endswith((".php", ".inc")):
            target = tmp_path / Path(path).name
            target.write_bytes(content)
            result = subprocess.run(["php", "-l", str(target)], capture_output=True, text=True)
            assert result.returncode == 0, (path, result.stdout, result.stderr)


def test_checker_refuses_broken_php(tmp_path: Path) -> None:
    for path, content in files(state()).items():
        target = tmp_path / path.removeprefix("/etc/roundcube/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    (tmp_path / "config.inc.php").write_text("<?php $config = [;\n")
    with pytest.raises(CheckFailed, match="syntax error"):
        ROUNDCUBE.validate(LocalConnector(), str(tmp_path))


@pytest.mark.parametrize(
    "change",
    [
        {"product_name": "<script>alert(1)</script>"},
        {"product_name": "Mail'; system('id'); //"},
        {"des_key": ""},
        {"domains": [WebmailDomain("one.example", "One\nMail", 7)]},
        {"books": {7: [{"id": "p1", "kind": "person", "email": "x'@y", "name": ""}]}},
    ],
)
def test_render_refuses_values_that_could_break_out(change: dict) -> None:
    with pytest.raises(ValueError):
        ROUNDCUBE.render(state(**change))


def test_render_refuses_crafted_node_addresses() -> None:
    s = state()
    s.nodes_by_role = {"smtp": [("mx1", "10.0.0.2:25'; x")]}
    with pytest.raises(ValueError):
        ROUNDCUBE.render(s)


@pytest.mark.django_db
def test_webmail_name_is_validated_and_audited_through_the_api(cast: Cast) -> None:
    client = token_client(cast.sub_admin)
    domain = make_domain(cast.department, "brand.example")
    url = reverse("mail-domain-detail", args=[domain.pk])
    response = client.patch(url, {"webmailName": "<b>x</b>", "defaultQuotaMb": 0}, format="json")
    assert response.status_code == 400, response.content
    assert {"webmailName", "defaultQuotaMb"} <= set(response.json()["errors"]), response.json()
    response = client.patch(url, {"webmailName": "Ministry Mail"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["webmailName"] == "Ministry Mail"
    record = AuditRecord.objects.filter(action="mail.domain.update").first()
    assert record is not None and "Ministry Mail" in json.dumps(record.changes)


@pytest.mark.django_db
def test_desired_state_of_a_webmail_node_carries_branding_and_address_book(
    cast: Cast,
    zone,  # noqa: F811
) -> None:
    domain = make_domain(cast.department, "gal.example", webmail_name="Gal Mail")
    make_mailbox(domain, "ann", display_name="Ann Archer")
    make_mailbox(domain, "hid", hide_from_address_book=True)
    node = Node.objects.create(
        customer=zone.customer, customer_path=zone.customer_path, zone=zone,
        hostname="web1.ums.test", addresses=["10.0.0.9"], ssh_address="10.0.0.9",
        roles=["webmail"], status=NodeStatus.ACTIVE,
    )  # fmt: skip
    s = desired.build(node)
    assert s.webmail is not None
    own = {d.name: d for d in s.webmail.domains}
    assert own["gal.example"].product_name == "Gal Mail"
    book = s.webmail.books[Domain.objects.get(name="gal.example").customer_id]
    assert [(e["email"], e["name"]) for e in book if e["email"].endswith("gal.example")] == [
        ("ann@gal.example", "Ann Archer")
    ]


# The plugin's own TOTP check, run by PHP with a stand-in base class (the plugin only
# needs rcube_plugin to be declared to load), against pyotp's codes.
_TOTP_PHP = r"""<?php
class rcube_plugin {}
require $argv[1];
$method = new ReflectionMethod('ums', 'totp_step');
$method->setAccessible(true);
$step = $method->invoke(null, $argv[2], $argv[3]);
echo json_encode(['step' => $step, 'now' => intdiv(time(), 30)]);
"""


def php_totp_step(tmp_path: Path, secret: str, code: str) -> dict:
    script = tmp_path / "totp.php"
    script.write_text(_TOTP_PHP)
    plugin = Path(__file__).parents[3] / "deploy/services/roundcube/plugin/ums.php"
    result = subprocess.run(
        ["php", str(script), str(plugin), secret, code], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_plugin_totp_accepts_current_codes_only(tmp_path: Path) -> None:
    import pyotp

    secret = pyotp.random_base32(32)
    totp = pyotp.TOTP(secret)
    now = time.time()
    got = php_totp_step(tmp_path, secret, totp.at(now))
    assert got["step"] is not None and abs(got["step"] - got["now"]) <= 1
    assert php_totp_step(tmp_path, secret, totp.at(now - 90))["step"] is None  # 3 steps old
    wrong = f"{(int(totp.at(now)) + 1) % 1000000:06d}"
    assert php_totp_step(tmp_path, secret, wrong)["step"] is None
    assert php_totp_step(tmp_path, secret, "12ab56")["step"] is None


def test_render_totp_seeds_readable_by_the_web_user_only() -> None:
    managed = {f.path: f for f in ROUNDCUBE.render(state(totp={"ann@one.example": "A" * 32}))}
    seeds = managed["/etc/roundcube/ums/totp.json"]
    assert json.loads(seeds.content) == {"ann@one.example": "A" * 32}
    assert (seeds.mode, seeds.owner, seeds.group) == (0o640, "root", "www-data")
    with pytest.raises(ValueError):
        ROUNDCUBE.render(state(totp={"ann@one.example": 'A"}; x'}))


@pytest.mark.django_db
def test_webmail_two_factor_enrolment_through_the_api_is_audited_and_rendered(
    cast: Cast,
    zone,  # noqa: F811
) -> None:
    client = token_client(cast.sub_admin)
    domain = make_domain(cast.department, "otp.example")
    mailbox = make_mailbox(domain, "ann")
    url = reverse("mail-mailbox-webmail-two-factor", args=[mailbox.pk])
    response = client.post(url)
    assert response.status_code == 201, response.content
    secret = response.json()["secret"]
    assert response.json()["uri"].startswith("otpauth://totp/")
    detail = client.get(reverse("mail-mailbox-detail", args=[mailbox.pk])).json()
    assert detail["webmailTwoFactor"] is True
    mailbox.refresh_from_db()
    assert secret not in mailbox.webmail_totp_secret  # stored encrypted
    node = Node.objects.create(
        customer=zone.customer, customer_path=zone.customer_path, zone=zone,
        hostname="web2.ums.test", addresses=["10.0.0.8"], ssh_address="10.0.0.8",
        roles=["webmail"], status=NodeStatus.ACTIVE,
    )  # fmt: skip
    assert desired.build(node).webmail.totp == {"ann@otp.example": secret}  # type: ignore[union-attr]
    assert client.delete(url).status_code == 204
    assert desired.build(node).webmail.totp == {}  # type: ignore[union-attr]
    actions = list(
        AuditRecord.objects.filter(action__startswith="mail.mailbox.webmail_2fa")
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions == ["mail.mailbox.webmail_2fa_enable", "mail.mailbox.webmail_2fa_disable"]
    # Out of scope: a sibling customer's administrator gets 404; a viewer may not enrol.
    assert token_client(cast.sibling_admin).post(url).status_code == 404
    assert token_client(cast.ministry_viewer).post(url).status_code == 403


def test_database_creation_heals_a_crashed_attempt(tmp_path: Path) -> None:
    """The preparation's database step (PHP, as on the node): a half-written temporary
    file from a crash is replaced, and an existing database is never touched."""
    import sqlite3

    from deploy.services.roundcube.service import _INIT_DB, SCHEMA

    db = tmp_path / "roundcube.db"
    (tmp_path / "roundcube.db.tmp").write_bytes(b"half a database")
    for _ in range(2):
        result = subprocess.run(
            ["php", "-r", _INIT_DB, str(db), SCHEMA], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
    tables = {row[0] for row in sqlite3.connect(db).execute("SELECT name FROM sqlite_master")}
    assert {"users", "session", "contacts"} <= tables
    assert not (tmp_path / "roundcube.db.tmp").exists()


class _FreshNode(LocalConnector):
    """A Debian node where nothing is installed yet: dpkg-query answers "not installed"
    until apt-get ran; nothing is really installed (apt itself is not under test here:
    scripts/install-test-packages.sh installs with the same preseed for real)."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[bytes | None] = []
        self.installed = False

    def run(self, argv: list[str], *, timeout=None, input=None, sudo=False):  # type: ignore[override]
        from deploy.connector.base import CommandResult

        self.commands.append(list(argv))
        self.inputs.append(input)
        out = ""
        if argv[0] == "dpkg-query" and self.installed:
            out = "".join(f"{p} ii \n" for p in argv[5:])
        if "apt-get" in argv:
            self.installed = True
        return CommandResult(argv=list(argv), exit_code=0, stdout=out, stderr="", duration=0)


def test_package_install_preseeds_roundcube_before_apt() -> None:
    from deploy import packages

    node = _FreshNode()
    wanted = packages.wanted([ROUNDCUBE], "debian")
    assert packages.ensure(node, "debian", wanted) == wanted
    names = [argv[0] if argv[0] != "env" else "apt-get" for argv in node.commands]
    preseed = names.index("debconf-set-selections")
    assert preseed < names.index("apt-get")
    assert b"roundcube/database-type select sqlite3" in (node.inputs[preseed] or b"")
