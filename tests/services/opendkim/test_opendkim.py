"""The OpenDKIM service renders only validated values, its checker is the real
``opendkim -n``, and Postfix points at it only when converge runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy import node_settings
from deploy.connector.base import CommandResult, Connector
from deploy.services import registry
from deploy.services.base import CheckFailed, DesiredState, DomainData, NodeView
from deploy.services.opendkim import SERVICE as OPENDKIM
from deploy.services.opendkim.service import ROOT
from deploy.services.postfix import SERVICE as POSTFIX
from deploy.services.postfix.safe import UnsafeName
from mail import dkim
from tests.services.localconn import LocalConnector

PEM, _PUBLIC = dkim.generate(2048)


def state(*domains: DomainData, roles: tuple[str, ...] = ("smtp",), **settings) -> DesiredState:
    node = NodeView(1, "mx1.example", "10.0.0.2", roles, "debian", 1)
    return DesiredState(node=node, domains=list(domains), settings=settings)


def signed(name: str = "a.example", selector: str = "s202612") -> DomainData:
    return DomainData(name, True, "", (), None, {}, dkim_selector=selector, dkim_private_key=PEM)


def files(st: DesiredState) -> dict[str, object]:
    return {f.path: f for f in OPENDKIM.render(st)}


def test_signing_tables_name_each_keyed_domain_and_keys_are_private() -> None:
    plain = DomainData("plain.example", True, "", (), None, {})
    off = DomainData("off.example", False, "", (), None, {}, "s1", PEM)
    rendered = files(state(signed(), plain, off))
    table = rendered[f"{ROOT}/SigningTable"].content.decode()
    assert "a.example s202612._domainkey.a.example\n" in table
    assert "plain.example" not in table and "off.example" not in table
    key = rendered[f"{ROOT}/keys/a.example.s202612.key"]
    assert (key.mode, key.owner) == (0o600, "opendkim")
    assert key.content.startswith(b"-----BEGIN PRIVATE KEY-----")
    keytable = rendered[f"{ROOT}/KeyTable"].content.decode()
    assert f"a.example:s202612:{ROOT}/keys/a.example.s202612.key" in keytable
    assert "PRIVATE" not in keytable


@pytest.mark.parametrize(
    "domain",
    [
        signed(selector="s1\nKeyTable /tmp/x"),
        signed(selector="../../etc"),
        signed(selector="s:1"),
        signed(name="a.example\nMode v"),
        DomainData("a.example", True, "", (), None, {}, "s1", "not a key"),
    ],
)
def test_unsafe_values_are_refused_before_rendering(domain: DomainData) -> None:
    with pytest.raises(UnsafeName):
        OPENDKIM.render(state(domain))


def test_relay_networks_are_internal_hosts() -> None:
    hosts = files(state(relay_networks=["10.9.0.0/16"]))[f"{ROOT}/InternalHosts"]
    assert hosts.content.decode().splitlines()[1:] == ["127.0.0.1", "::1", "10.9.0.0/16"]


def test_signer_only_on_smtp_nodes_and_can_be_turned_off() -> None:
    assert OPENDKIM.applies_to_state(state())
    assert not OPENDKIM.applies_to_state(state(roles=("imap",)))
    assert not OPENDKIM.applies_to_state(state(dkim_signing=False))
    assert node_settings.problems({"dkim_signing": "no"})


def test_postfix_uses_the_signer_only_when_converge_runs_it(monkeypatch) -> None:
    monkeypatch.setattr(registry, "SERVICES", [OPENDKIM, POSTFIX])
    main_cf = POSTFIX.main_cf(state(content_filter=False))
    entry = "{ inet:127.0.0.1:8891, default_action=accept }"
    assert f"smtpd_milters = {entry}" in main_cf
    assert f"non_smtpd_milters = {entry}" in main_cf
    # Before the content filter (which reads the verdicts), whose failures still defer.
    main_cf = POSTFIX.main_cf(state())
    assert f"smtpd_milters = {entry}, unix:private/ums-milter" in main_cf
    assert "milter_default_action = tempfail" in main_cf
    assert "8891" not in POSTFIX.main_cf(state(dkim_signing=False))
    monkeypatch.setattr(registry, "SERVICES", [POSTFIX])
    assert "8891" not in POSTFIX.main_cf(state())


def test_outbound_relay_is_checked_and_rendered() -> None:
    assert node_settings.problems({"outbound_relay": "10.0.0.9:2525"}) == []
    assert node_settings.problems({"outbound_relay": "relay.example"}) == []
    for bad in ("relay.example\nx = y", "a b", "relay.example:0", "[x]:25"):
        assert node_settings.problems({"outbound_relay": bad}), bad
    assert "relayhost = [10.0.0.9]:2525" in POSTFIX.main_cf(state(outbound_relay="10.0.0.9:2525"))
    assert "relayhost = [relay.example]:25" in POSTFIX.main_cf(
        state(outbound_relay="relay.example")
    )
    assert "relayhost" not in POSTFIX.main_cf(state(roles=("imap",), outbound_relay="r.example"))


def test_real_checker_accepts_the_render_and_refuses_a_bad_option(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    for file in OPENDKIM.render(state(signed())):
        path = stage / file.path[len(ROOT) + 1 :]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(file.content)
    conn = LocalConnector()
    OPENDKIM.validate(conn, str(stage))
    conf = stage / "opendkim.conf"
    conf.write_text(conf.read_text() + "NoSuchOption yes\n")
    with pytest.raises(CheckFailed, match="unrecognized parameter"):
        OPENDKIM.validate(conn, str(stage))
    conf.write_text(conf.read_text().replace("NoSuchOption yes\n", ""))
    (stage / "SigningTable").unlink()
    with pytest.raises(CheckFailed, match="SigningTable"):
        OPENDKIM.validate(conn, str(stage))


class SystemdNode(Connector):
    """A node with systemd, as far as activate can tell: records commands and files.
    (No systemd runs where the suite does; the node tests take the pid-file path.)"""

    host = "systemd-node"

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.commands: list[list[str]] = []

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, argv, *, timeout=None, input=None, sudo=False) -> CommandResult:
        self.commands.append(list(argv))
        return CommandResult(list(argv), 0, "", "", 0.0)

    def put_file(self, remote_path, data, *, mode=None, owner=None, group=None) -> None:
        self.files[remote_path] = data

    def get_file(self, remote_path):
        return self.files.get(remote_path)


def test_under_systemd_the_package_unit_runs_our_configuration() -> None:
    node = SystemdNode()
    OPENDKIM.activate(node, [])
    drop_in = node.files["/etc/systemd/system/opendkim.service.d/ums.conf"].decode()
    assert f"ExecStart=/usr/sbin/opendkim -x {ROOT}/opendkim.conf" in drop_in
    assert "PIDFile=/run/ums-opendkim/opendkim.pid" in drop_in
    assert "Restart=on-failure" in drop_in
    assert ["systemctl", "daemon-reload"] in node.commands
    assert node.commands[-1] == ["systemctl", "reload-or-restart", "opendkim"]
    node.commands.clear()
    OPENDKIM.activate(node, [])  # drop-in unchanged: no daemon-reload
    assert ["systemctl", "daemon-reload"] not in node.commands
    assert ["systemctl", "reload-or-restart", "opendkim"] in node.commands
