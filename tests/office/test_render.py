"""coolwsd.xml, the load balancer's office paths and Nextcloud's office settings, rendered.

Pure rendering (no node) plus Debian's real ``nginx -t`` on the rendered load balancer
tree; the node test (test_office_node.py) runs the same files against the stand-ins.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from defusedxml import ElementTree as ET

from deploy.actions import actions_for
from deploy.services.base import DesiredState, NodeView
from deploy.services.collabora import config
from deploy.services.nextcloud.service import office_config
from deploy.services.nginx import LocalCAIssuer, NginxService
from servers.models import Node
from tests.services.localconn import LocalConnector, install

CREDENTIALS = config.CollaboraData("ums-admin", "s3cret-s3cret-s3cret")


def state(**settings: object) -> DesiredState:
    return DesiredState(
        node=NodeView(7, "office1.example.org", "192.0.2.30", ("office",), "debian", 1),
        nodes_by_role={
            "office": [("office1.example.org", "192.0.2.30")],
            "cloudfiles": [
                ("files1.example.org", "192.0.2.20"),
                ("files2.example.org", "2001:db8::20"),
            ],
            "loadbalancer": [("lb1.example.org", "192.0.2.10")],
        },
        settings=dict(settings),
    )  # fmt: skip


def test_coolwsd_xml_has_the_lb_name_tls_termination_wopi_hosts_and_hashed_admin() -> None:
    root = ET.fromstring(config.render(state(), CREDENTIALS))
    # No web_hostnames: the names nginx serves, <role>.<the LB's domain>.
    assert root.findtext("server_name") == "office.example.org"
    assert (root.findtext("ssl/enable"), root.findtext("ssl/termination")) == ("false", "true")
    # It replaces the package's file: the packaged paths, not coolwsd's development defaults.
    assert root.findtext("child_root_path") == "/opt/cool/child-roots"
    assert root.findtext("sys_template_path") == "/opt/cool/systemplate"
    assert root.find("storage/wopi").get("allow") == "true"
    group = root.find("storage/wopi/alias_groups/group")
    assert group.findtext("host") == "https://cloudfiles.example.org:443"
    aliases = [a.text for a in group.findall("alias")]
    assert r"https?://files1\.example\.org(:[0-9]+)?" in aliases
    assert r"https?://2001:db8::20(:[0-9]+)?" in aliases
    allowed = [h.text for h in root.findall("net/post_allow/host")]
    assert r"192\.0\.2\.20" in allowed and r"192\.0\.2\.10" in allowed  # cloud files, LB
    assert r"192\.0\.2\.30" not in allowed  # the office node's own address is not a client
    # The admin password never reaches the node, only coolconfig's PBKDF2 form of it.
    stored = root.findtext("admin_console/secure_password")
    _pbkdf2, _sha, rounds, salt, digest = stored.split(".")
    again = hashlib.pbkdf2_hmac(
        "sha512", CREDENTIALS.admin_password.encode(), bytes.fromhex(salt), int(rounds), 64
    )
    assert again.hex() == digest
    assert config.render(state(), CREDENTIALS) == config.render(state(), CREDENTIALS)
    # Named explicitly: the LB's office name wins; without cloud files nodes WOPI is off.
    named = state(web_hostnames={"office": "docs.example.net", "cloudfiles": "cloud.example.net"})
    root = ET.fromstring(config.render(named, None))
    assert root.findtext("server_name") == "docs.example.net"
    group = root.find("storage/wopi/alias_groups/group")
    assert group.findtext("host") == "https://cloud.example.net:443"
    assert root.findtext("admin_console/enable") == "false"
    alone = state()
    alone.nodes_by_role = {"office": alone.nodes_by_role["office"]}
    root = ET.fromstring(config.render(alone, None))
    assert root.findtext("server_name") == "office1.example.org"
    assert root.find("storage/wopi").get("allow") == "false"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"settings": {"web_hostnames": {"office": "x</server_name><y>"}}}, "web_hostnames"),
        ({"cloudfiles": [("files1.example.org", "192.0.2.20/24")]}, "address"),
        ({"cloudfiles": [("files1.example.org\nx", "192.0.2.20")]}, "name"),
        ({"credentials": config.CollaboraData("admin user", "x" * 20)}, "admin user"),
        ({"credentials": config.CollaboraData("admin", "short")}, "password"),
        ({"settings": {"collabora_port": 70000}}, "collabora_port"),
    ],
)
def test_values_are_validated_before_rendering(change: dict, field: str) -> None:
    current = state(**change.get("settings", {}))
    if "cloudfiles" in change:
        current.nodes_by_role["cloudfiles"] = change["cloudfiles"]
    with pytest.raises(config.InvalidOfficeValue, match=field):
        config.render(current, change.get("credentials", CREDENTIALS))
        config.port(current)


def test_nextcloud_points_at_the_same_office_name_the_lb_serves() -> None:
    wiring = state()
    wiring.node = NodeView(3, "files1.example.org", "192.0.2.20", ("cloudfiles",), "debian", 1)
    office = office_config(wiring)
    assert office is not None
    assert office["wopi_url"] == "https://office.example.org"
    assert office["wopi_allowlist"] == "192.0.2.30"


def test_lb_serves_collaboras_paths_only_and_nginx_accepts_them(tmp_path: Path) -> None:
    issuer = LocalCAIssuer.create()
    bundle = issuer.issue(["office.example.org"])
    service = NginxService(config_root=str(tmp_path / "nginx"), runtime_dir=str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    lb = DesiredState(
        node=NodeView(1, "lb1.example.org", "192.0.2.10", ("loadbalancer",), "debian", 1),
        nodes_by_role={"office": [("office1.example.org", "192.0.2.30")]},
        settings={
            "web_backend_ports": {"office": 9980},
            "tls_certificates": {"default": {"cert": bundle.cert_pem, "key": bundle.key_pem}},
        },
    )
    files = service.render(lb)
    sites = next(f for f in files if f.path.endswith("sites.conf")).content.decode()
    office = sites[sites.index("server_name office.example.org") :]
    for location in (
        "location ^~ /browser {",
        "location ^~ /hosting/discovery {",
        "location ^~ /hosting/capabilities {",
        "location ~ ^/cool/(.*)/ws$ {",
        "location ^~ /cool/adminws {",
        "location ~ ^/(c|l)ool {",
    ):
        assert location in office, location
    assert 'proxy_set_header Connection "Upgrade";' in office
    assert "return 404;" in office  # anything else on the office name
    upstreams = next(f for f in files if f.path.endswith("upstreams.conf")).content.decode()
    assert "server 192.0.2.30:9980;" in upstreams
    assert "hash $arg_WOPISrc consistent;" in upstreams  # one document, one coolwsd
    install(files)
    service.validate(LocalConnector(), str(tmp_path / "nginx"))  # the real nginx -t


def test_the_office_check_is_offered_on_office_nodes_only() -> None:
    assert "office_check" in actions_for(Node(roles=["office"]))
    assert "office_check" not in actions_for(Node(roles=["smtp", "cloudfiles"]))
    assert "reboot" in actions_for(Node(roles=[]))
