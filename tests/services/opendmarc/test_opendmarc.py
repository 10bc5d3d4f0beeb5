"""Inbound mail authentication without nodes: OpenDMARC's rendering and its real checker,
the resolver setting, the milter order, the DMARC-failure policy through the API, and
the content filter's decisions on OpenDMARC's verdicts. The daemons themselves are
exercised in tests/converge/test_mail_auth.py."""

from __future__ import annotations

import importlib.util
import json
import socket
import threading
from pathlib import Path
from types import ModuleType

import pytest
from django.urls import reverse

from deploy import node_settings
from deploy.services import registry
from deploy.services.base import CheckFailed, DesiredState, DomainData, NodeView
from deploy.services.opendkim import SERVICE as OPENDKIM
from deploy.services.opendmarc import SERVICE as OPENDMARC
from deploy.services.opendmarc.service import ROOT, START
from deploy.services.postfix import SERVICE as POSTFIX
from deploy.services.postfix import filtering
from deploy.services.postfix.safe import UnsafeName
from tests.fixtures import Cast, token_client
from tests.services.localconn import LocalConnector
from tests.services.opendkim.test_opendkim import SystemdNode

HOST = "mx1.example"


def state(*domains: DomainData, roles: tuple[str, ...] = ("smtp",), **settings) -> DesiredState:
    node = NodeView(1, HOST, "10.0.0.2", roles, "debian", 1)
    return DesiredState(node=node, domains=list(domains), settings=settings)


def rendered(st: DesiredState) -> dict[str, bytes]:
    return {f.path: f.content for f in OPENDMARC.render(st)}


def test_checks_verdicts_of_this_node_only_and_never_refuse_by_themselves() -> None:
    conf = rendered(state())[f"{ROOT}/opendmarc.conf"].decode().splitlines()
    for line in (
        f"AuthservID {HOST}",
        f"TrustedAuthservIDs {HOST}",
        "SPFSelfValidate true",
        "SPFIgnoreResults true",
        "RejectFailures false",
        "IgnoreAuthenticatedClients true",
        "Socket inet:8893@127.0.0.1",
    ):
        assert line in conf
    hosts = rendered(state(relay_networks=["10.9.0.0/16"]))[f"{ROOT}/IgnoreHosts"].decode()
    assert hosts.splitlines()[1:] == ["127.0.0.1", "::1", "10.9.0.0/16"]
    assert OPENDMARC.applies_to_state(state())
    assert not OPENDMARC.applies_to_state(state(roles=("imap",)))
    assert not OPENDMARC.applies_to_state(state(dmarc_checks=False))


def test_resolver_setting_reaches_both_daemons_and_is_checked() -> None:
    files = rendered(state(mail_auth_resolvers=["10.0.0.53", "2001:db8::53"]))
    resolv = files[f"{ROOT}/resolv.conf"].decode()
    assert "nameserver 10.0.0.53\nnameserver 2001:db8::53\n" in resolv
    assert "options timeout:2 attempts:2" in resolv
    dkim_conf = {f.path: f for f in OPENDKIM.render(state(mail_auth_resolvers=["10.0.0.53"]))}
    assert (
        "Nameservers 10.0.0.53\n" in dkim_conf["/etc/ums-opendkim/opendkim.conf"].content.decode()
    )
    # Unset: the system's resolver (no nameserver line, so no private mount).
    assert "nameserver" not in rendered(state())[f"{ROOT}/resolv.conf"].decode()
    assert "Nameservers" not in OPENDKIM.render(state())[0].content.decode()
    assert files[START].startswith(b"#!/bin/sh") and b"unshare --mount" in files[START]
    assert node_settings.problems({"mail_auth_resolvers": ["10.0.0.53"]}) == []
    for bad in (["resolver.example"], ["10.0.0.53:5353"], ["1.1.1.1"] * 4, [53]):
        assert node_settings.problems({"mail_auth_resolvers": bad}), bad
    with pytest.raises(UnsafeName):
        OPENDMARC.render(state(mail_auth_resolvers=["10.0.0.53\noptions x"]))


def test_real_checker_accepts_the_render_and_refuses_a_bad_option(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    for path, content in rendered(state()).items():
        target = stage / path[len(ROOT) + 1 :]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    conn = LocalConnector()
    OPENDMARC.validate(conn, str(stage))
    conf = stage / "opendmarc.conf"
    conf.write_text(conf.read_text() + "NoSuchOption yes\n")
    with pytest.raises(CheckFailed):
        OPENDMARC.validate(conn, str(stage))


def test_under_systemd_the_package_unit_runs_the_start_script() -> None:
    node = SystemdNode()
    OPENDMARC.activate(node, [])
    drop_in = node.files["/etc/systemd/system/opendmarc.service.d/ums.conf"].decode()
    assert f"ExecStart={START}" in drop_in and "Restart=on-failure" in drop_in
    assert node.commands[-1] == ["systemctl", "start", "opendmarc"]
    OPENDMARC.activate(node, OPENDMARC.render(state()))
    assert node.commands[-1] == ["systemctl", "restart", "opendmarc"]


def test_postfix_runs_dkim_then_dmarc_then_the_filter(monkeypatch) -> None:
    monkeypatch.setattr(registry, "SERVICES", [OPENDKIM, OPENDMARC, POSTFIX])
    dkim_entry = "{ inet:127.0.0.1:8891, default_action=accept }"
    dmarc_entry = "{ inet:127.0.0.1:8893, default_action=accept }"
    main_cf = POSTFIX.main_cf(state())
    assert f"smtpd_milters = {dkim_entry}, {dmarc_entry}, unix:private/ums-milter" in main_cf
    # Mail the node injects itself is signed, never DMARC-checked.
    assert f"non_smtpd_milters = {dkim_entry}\n" in main_cf
    assert "8893" not in POSTFIX.main_cf(state(dmarc_checks=False))
    monkeypatch.setattr(registry, "SERVICES", [OPENDKIM, POSTFIX])
    assert "8893" not in POSTFIX.main_cf(state())


def test_policy_file_carries_each_domains_dmarc_action_and_refuses_unknown_ones() -> None:
    held = DomainData("a.example", True, "", (), None, {"dmarc_failure": "hold"})
    plain = DomainData("b.example", True, "", (), None, {})
    config = filtering.filter_config(state(held, plain, mail_auth_resolvers=["10.0.0.53"]))
    policies = config["policies"]
    assert policies[config["domains"]["a.example"]]["dmarc_failure"] == "hold"
    assert policies[config["domains"]["b.example"]]["dmarc_failure"] == "tag"
    assert config["authserv_id"] == HOST and config["resolvers"] == ["10.0.0.53"]
    assert config["dmarc_subject_tag"] == "[DMARC]"
    bad = DomainData("c.example", True, "", (), None, {"dmarc_failure": "drop"})
    with pytest.raises(UnsafeName):
        filtering.filter_config(state(bad))
    assert node_settings.problems({"dmarc_subject_tag": "[X]\nBcc: y"})


# ------------------------------------------------------------------ the filter's decisions


@pytest.fixture(scope="module")
def ums_filter() -> ModuleType:
    path = Path(filtering.__file__).parent / "filter" / "ums_filter.py"
    spec = importlib.util.spec_from_file_location("ums_filter_mail_auth", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def verdict_for(module: ModuleType, result: str, action: str, **policy_extra) -> dict:
    header = f"{HOST}; dmarc={result} (p=reject dis=none) header.from=bank.example"
    policy = {"dmarc_failure": action, "sender_allow": [], "sender_block": [], **policy_extra}
    config = {
        "authserv_id": HOST,
        "dmarc_subject_tag": "[DMARC]",
        "subject_tag": "[SPAM]",
        # Larger messages are not scored: no spamd needed here.
        "spamd": {"max_bytes": 1},
    }
    return module.decide(
        b"Subject: hi\r\n\r\nbody\r\n", policy, config, sender="ceo@bank.example",
        header_from=["ceo@bank.example"], authenticated=False, auth_results=[header],
    )  # fmt: skip


def test_failure_is_tagged_held_or_refused_as_the_policy_says(ums_filter: ModuleType) -> None:
    tagged = verdict_for(ums_filter, "fail", "tag")
    assert tagged["action"] == "accept" and tagged["subject_tags"] == ["[DMARC]"]
    assert ("X-UMS-DMARC", "fail; action=tag; domain=bank.example; policy=reject") in tagged[
        "headers"
    ]
    held = verdict_for(ums_filter, "fail", "hold")
    assert held["action"] == "hold"
    assert held["hold"] == "dmarc; sender=bank.example; policy=reject"
    refused = verdict_for(ums_filter, "fail", "reject")
    assert refused["action"] == "reject" and "bank.example" in refused["reject"]
    # "sender": the published p=reject refuses.
    assert verdict_for(ums_filter, "fail", "sender")["action"] == "reject"
    quiet = verdict_for(ums_filter, "fail", "none")
    assert quiet["action"] == "accept" and not quiet["subject_tags"]
    # Passing mail, and an allowed sender, are left alone.
    assert verdict_for(ums_filter, "pass", "hold")["action"] == "accept"
    allowed = verdict_for(ums_filter, "fail", "hold", sender_allow=["bank.example"])
    assert allowed["action"] == "accept"


def test_only_this_nodes_results_count(ums_filter: ModuleType) -> None:
    forged = ["other.example; dmarc=fail header.from=x.example"]
    assert ums_filter.dmarc_result(forged, HOST) is None
    found = ums_filter.dmarc_result([*forged, f"{HOST}; dmarc=fail (p=quarantine)"], HOST)
    assert found == {"result": "fail", "policy": "quarantine", "domain": ""}
    assert ums_filter.dmarc_action(found, {"dmarc_failure": "sender"}) == "hold"


def test_a_lookup_dns_cannot_answer_is_temperror_and_delivered(ums_filter: ModuleType) -> None:
    """OpenDMARC says dmarc=none when it could not fetch the record; the filter asks DNS
    itself: an unanswered query makes it temperror (delivered, marked), an answer keeps
    it none."""
    # Nothing listens on 127.0.0.1:53 here: refused at once.
    assert not ums_filter.dns_answers("_dmarc.bank.example", ["127.0.0.1"], 0.3)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]

        def answer() -> None:
            query, client = server.recvfrom(512)
            # NXDOMAIN: the name has no record, which DNS could say.
            server.sendto(query[:2] + b"\x81\x83" + query[4:], client)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        original = ums_filter.socket.socket

        class ToPort(original):  # the filter always asks port 53
            def sendto(self, data, address):
                return super().sendto(data, (address[0], port))

        ums_filter.socket.socket = ToPort
        try:
            assert ums_filter.dns_answers("_dmarc.bank.example", ["127.0.0.1"], 2)
        finally:
            ums_filter.socket.socket = original
        thread.join(5)


# ------------------------------------------------------------------ the policy


@pytest.mark.django_db
def test_dmarc_failure_policy_is_inherited_validated_and_audited(cast: Cast) -> None:
    from audit.models import AuditRecord

    client = token_client(cast.sub_admin)
    url = reverse("mail-customer-policy-detail", args=[cast.ministry.pk])
    assert client.get(url).json()["effectiveFiltering"]["dmarcFailure"]["value"] == "tag"
    response = client.patch(url, {"dmarcFailure": "drop"}, format="json")
    assert response.status_code == 400 and "dmarcFailure" in response.json()["errors"]
    response = client.patch(url, {"dmarcFailure": "hold"}, format="json")
    assert response.status_code == 200, response.content
    record = AuditRecord.objects.filter(object_id=str(cast.ministry.pk)).order_by("-id").first()
    assert record is not None and "dmarc_failure" in json.dumps(record.changes, default=str)
    # A customer below inherits it, with its source.
    child = reverse("mail-customer-policy-detail", args=[cast.department.pk])
    effective = client.get(child).json()["effectiveFiltering"]["dmarcFailure"]
    assert effective["value"] == "hold" and effective["source"]["id"] == cast.ministry.pk
    response = client.patch(url, {"dmarcFailure": None}, format="json")
    assert client.get(url).json()["effectiveFiltering"]["dmarcFailure"]["value"] == "tag"


@pytest.mark.django_db
def test_portal_policy_form_sets_and_shows_the_dmarc_failure_action(cast: Cast) -> None:
    from django.test import Client

    from mail import choices
    from mail.models import CustomerPolicy

    portal = Client()
    portal.force_login(cast.sub_admin)
    url = reverse("mail:customer", args=[cast.ministry.pk])
    data = {f"access_{code}": choices.INHERIT for code in choices.PROTOCOL_CODES}
    response = portal.post(url, {**data, "dmarc_failure": "bogus"})
    assert response.status_code == 200 and "dmarc_failure" in response.context["form"].errors
    response = portal.post(url, {**data, "dmarc_failure": "sender"})
    assert response.status_code == 302, response.content[:2000]
    assert CustomerPolicy.objects.get(pk=cast.ministry.pk).dmarc_failure == "sender"
    page = portal.get(url).content.decode()
    assert "As the sender&#x27;s domain asks" in page
