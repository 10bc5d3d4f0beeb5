"""Office (Collabora Online) end to end: converge, Nextcloud wiring, the LB's TLS, PDF export.

STAND-INS: Collabora Online and Nextcloud cannot be installed on these machines (neither
is in Debian; Nextcloud needs its PHP application and database, Collabora comes from its
own repository). The office node runs tests/standins/collabora (coolwsd's HTTP interface,
reading the coolwsd.xml converge renders, converting to PDF with Debian's real
LibreOffice) and the cloud files node runs tests/standins/nextcloud (``occ``). The three
namespaced sshd nodes, SSH, converge, the load balancer's real nginx with TLS, jobs, the
API and the reconciler are the real ones; the product code is what runs against the real
servers.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paramiko
import pytest
from defusedxml import ElementTree as ET
from django.db import connection, connections
from django.urls import reverse

from audit.models import AuditRecord
from deploy import dirty
from deploy.models import NodeConvergeState
from deploy.services import registry
from deploy.services.collabora import SERVICE as COLLABORA
from deploy.services.nextcloud import SERVICE as NEXTCLOUD
from deploy.services.nginx import NginxService
from office.models import OfficeConsole
from office.reconcile import rewire_office_nodes
from servers.models import Node, NodeAlert, Zone
from tests.cloudfiles import nodes as nextcloud_nodes
from tests.converge.conftest import MAIL_PRIVATE_PATHS, approved_node, trusting_cluster
from tests.faults.nodes import Gate, kill_sshd, start_sshd
from tests.fixtures import Cast, token_client
from tests.servers.conftest import controller_key, controller_pkey, zone  # noqa: F401
from ums.models import Job

from . import nodes

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

OFFICE_HOST = "office.files-office.test"
FILES_HOST = "cloud.files-office.test"
LB_RUN = "/var/lib/ums-lb"


def self_signed(workdir: Path) -> dict[str, str]:
    key, crt = workdir / "lb.key", workdir / "lb.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={OFFICE_HOST}",
         "-addext", f"subjectAltName=DNS:{OFFICE_HOST},DNS:{FILES_HOST}",
         "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True,
    )  # fmt: skip
    return {"cert": crt.read_text(), "key": key.read_text()}


def request(
    address: str, port: int, method: str, path: str, *, tls: bool, host: str = OFFICE_HOST,
    body: bytes | None = None, headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:  # fmt: skip
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            address, port, timeout=60, context=context
        )
    else:
        conn = http.client.HTTPConnection(address, port, timeout=60)
    conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def convert(address: str, port: int, *, tls: bool) -> tuple[int, bytes]:
    """A .txt converted through coolwsd's REST API (multipart field ``data``)."""
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="data"; filename="note.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\nMinutes of the meeting\r\n--{boundary}--\r\n"
    ).encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return request(
        address, port, "POST", "/cool/convert-to/pdf", tls=tls, body=body, headers=headers
    )


def assert_jobs_succeeded() -> None:
    failed = list(Job.objects.exclude(status=Job.SUCCEEDED).values_list("title", "error"))
    assert not failed, failed


def nextcloud_state(tnode: Any) -> dict[str, Any]:
    return json.loads(tnode.path(f"{nextcloud_nodes.STATE_DIR}/state.json").read_text())


def discovery(address: str) -> str:
    status, body = request(address, 9980, "GET", "/hosting/discovery", tls=False)
    assert status == 200, body
    return body.decode()


def converge_in_thread(node_id: int) -> None:
    try:
        dirty.mark([node_id], reason="test: office name changed")
    finally:
        connections.close_all()


def office_check(client: Any, node: Node) -> Job:
    response = client.post(
        reverse("node-node-action", args=[node.pk]), {"action": "office_check"}, format="json"
    )
    assert response.status_code == 202, response.content
    return Job.objects.get(pk=response.json()["id"])


def test_office_node_wired_to_nextcloud_behind_the_lb_with_pdf_export(
    cast: Cast,
    tmp_path_factory: pytest.TempPathFactory,
    controller_pkey: paramiko.PKey,  # noqa: F811
    controller_key: Any,  # noqa: F811
    zone: Zone,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
) -> None:
    workdir = tmp_path_factory.mktemp("office")
    monkeypatch.setattr(
        registry, "SERVICES", [NEXTCLOUD, COLLABORA, NginxService(runtime_dir=LB_RUN)]
    )
    settings.UMS_CONVERGE = {
        "nextcloud_occ": ["occ"],
        "web_hostnames": {"office": OFFICE_HOST, "cloudfiles": FILES_HOST},
        "web_backend_ports": {"office": 9980},
        "tls_certificates": {"default": self_signed(workdir)},
        # Test nodes share the host's /etc/group, which has no "cool" (coolwsd's user).
        "collabora_group": "root",
    }
    settings.UMS_AUTO_CONVERGE = True
    settings.UMS_CONVERGE_ON_APPROVAL = True
    private = (*MAIL_PRIVATE_PATHS, nextcloud_nodes.STATE_DIR, *nodes.PRIVATE_PATHS, LB_RUN)
    with trusting_cluster(workdir, 3, controller_pkey, private) as cluster:
        cloud, office, balancer = cluster.nodes
        nextcloud_nodes.install(cloud)
        nodes.install(office)
        cloud_node = approved_node(zone, cast, cloud, ["cloudfiles"])
        lb_node = approved_node(zone, cast, balancer, ["loadbalancer"])
        assert_jobs_succeeded()
        rewire_office_nodes()  # the wiring as it is now: no office node yet
        assert "richdocuments" not in nextcloud_state(cloud)["config"]
        office_node = approved_node(zone, cast, office, ["office"])
        assert_jobs_succeeded()

        # coolwsd.xml: the LB's name, TLS ended at the LB, WOPI only from cloud files.
        xml_path = office.path("/etc/coolwsd/coolwsd.xml")
        assert xml_path.stat().st_mode & 0o777 == 0o640
        conf = ET.parse(xml_path).getroot()
        assert conf.findtext("server_name") == OFFICE_HOST
        assert (conf.findtext("ssl/enable"), conf.findtext("ssl/termination")) == ("false", "true")
        group = conf.find("storage/wopi/alias_groups/group")
        assert group.findtext("host") == f"https://{FILES_HOST}:443"
        aliases = [a.text for a in group.findall("alias")]
        assert any(cloud.hostname.replace(".", r"\.") in a for a in aliases), aliases
        assert any(cloud.address.replace(".", r"\.") in a for a in aliases), aliases
        console = OfficeConsole.objects.get(node=office_node)
        assert conf.findtext("admin_console/username") == console.username
        assert console.password not in xml_path.read_text()  # only its PBKDF2 hash
        with connection.cursor() as cursor:  # encrypted at rest
            cursor.execute("SELECT password FROM office_officeconsole")
            (stored,) = cursor.fetchone()
        assert stored.startswith("gAAAA") and console.password not in stored

        # The office node's approval re-converged Nextcloud: richdocuments on the LB's name,
        # WOPI allowed from the office node only, and the settings activated.
        state = nextcloud_state(cloud)
        rich = state["config"]["richdocuments"]
        assert rich["wopi_url"] == f"https://{OFFICE_HOST}"
        assert rich["wopi_allowlist"] == office.address
        assert state["richdocuments_activated"]["wopi_url"] == f"https://{OFFICE_HOST}"

        # A converge cut off after the settings but before the activation (the marker is
        # what it would have left) activates on the next converge.
        path = cloud.path(f"{nextcloud_nodes.STATE_DIR}/state.json")
        cut = nextcloud_state(cloud)
        del cut["config"]["richdocuments"]["ums_activated"], cut["richdocuments_activated"]
        path.write_text(json.dumps(cut))
        dirty.mark([cloud_node.pk], reason="test: heal the activation")
        assert_jobs_succeeded()
        healed = nextcloud_state(cloud)
        assert healed["richdocuments_activated"]["wopi_url"] == f"https://{OFFICE_HOST}"
        assert healed["config"]["richdocuments"]["ums_activated"]

        # The load balancers learn of the office node from the wiring reconciler.
        sites = balancer.path("/etc/nginx/ums/sites.conf")
        assert OFFICE_HOST not in sites.read_text()
        assert rewire_office_nodes()["marked"] == 3
        assert OFFICE_HOST in sites.read_text()
        assert rewire_office_nodes() == {}  # nothing changed since

        # Through the LB's TLS: discovery hands out https:// URLs on the office name...
        lb = balancer.address
        status, body = request(lb, 443, "GET", "/hosting/discovery", tls=True)
        assert status == 200, body
        urls = {
            a.get("urlsrc") for a in ET.fromstring(body).iter("action") if a.get("ext") == "odt"
        }
        assert urls and all(u.startswith(f"https://{OFFICE_HOST}/browser/") for u in urls), urls
        status, body = request(lb, 443, "GET", "/hosting/capabilities", tls=True)
        assert status == 200 and json.loads(body)["convert-to"]["available"], body
        # ...export to PDF works (Nextcloud's path: through the LB, which post_allow lists)...
        status, pdf = convert(lb, 443, tls=True)
        assert status == 200 and pdf.startswith(b"%PDF"), pdf[:200]
        # ...the editor opens for Nextcloud's WOPISrc and refuses any other WOPI host...
        editor = next(iter(urls)).split(OFFICE_HOST, 1)[1]
        wopi = "/index.php/apps/richdocuments/wopi/files/7_oc"
        status, _body = request(
            lb, 443, "GET", f"{editor}WOPISrc=https://{FILES_HOST}{wopi}", tls=True
        )
        assert status == 200
        status, body = request(lb, 443, "GET", f"{editor}WOPISrc=https://evil.test{wopi}", tls=True)
        assert status == 403 and b"No acceptable WOPI hosts found" in body, body
        # ...the admin console takes the generated credentials only...
        admin = "/browser/dist/admin/admin.html"
        good = base64.b64encode(f"{console.username}:{console.password}".encode()).decode()
        bad = base64.b64encode(f"{console.username}:guess".encode()).decode()
        auth = {"Authorization": f"Basic {good}"}
        assert request(lb, 443, "GET", admin, tls=True, headers=auth)[0] == 200
        auth = {"Authorization": f"Basic {bad}"}
        assert request(lb, 443, "GET", admin, tls=True, headers=auth)[0] == 401
        # ...and nothing but Collabora's paths is served on the office name.
        assert request(lb, 443, "GET", "/index.php", tls=True)[0] == 404
        # convert-to straight from an address outside post_allow is refused (coolwsd's rule).
        status, _pdf = convert(office.address, 9980, tls=False)
        assert status == 403

        # The health check (node action): a PDF export from the node, audited, a job.
        client = token_client(cast.sub_admin)
        job = office_check(client, office_node)
        assert job.status == Job.SUCCEEDED, (job.error, job.log)
        assert job.result["healthy"] and "%PDF" in job.result["probe"]
        assert AuditRecord.objects.filter(
            action="node.action", object_id=str(office_node.pk)
        ).exists()
        response = client.post(
            reverse("node-node-action", args=[cloud_node.pk]),
            {"action": "office_check"},
            format="json",
        )
        assert response.status_code == 400 and "action" in response.json()["errors"], (
            response.content
        )

        # Fault: coolwsd dies. The check fails with an alert on the node; "start all
        # services" starts it from its live files and the next check clears the alert.
        office.exec_in_node(["service", "coolwsd", "stop"])
        job = office_check(client, office_node)
        assert job.status == Job.FAILED and "9980" in job.error, (job.status, job.error)
        assert NodeAlert.objects.filter(
            node=office_node, kind="office_unhealthy", resolved_at=None
        ).exists()
        response = client.post(
            reverse("node-node-action", args=[office_node.pk]),
            {"action": "start_services"},
            format="json",
        )
        assert response.status_code == 202, response.content
        assert Job.objects.get(pk=response.json()["id"]).status == Job.SUCCEEDED
        assert office_check(client, office_node).status == Job.SUCCEEDED
        assert not NodeAlert.objects.filter(
            node=office_node, kind="office_unhealthy", resolved_at=None
        ).exists()

        # The office node's sshd dies after the new coolwsd.xml is installed and before
        # coolwsd restarts (a gate holds `service coolwsd restart`). Once sshd is back, the
        # next converge finds the file current but coolwsd running the older one, restarts
        # it, and discovery hands out the new name.
        renamed = "docs.files-office.test"
        settings.UMS_CONVERGE = {
            **settings.UMS_CONVERGE,
            "web_hostnames": {"office": renamed, "cloudfiles": FILES_HOST},
        }
        gate = Gate(office, "service", real=nodes.LAUNCHER)
        gate.close()
        thread = threading.Thread(target=converge_in_thread, args=(office_node.pk,))
        thread.start()
        deadline = time.monotonic() + 120
        while not gate.waiting() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert gate.waiting(), "the converge never reached coolwsd's restart"
        kill_sshd(office)
        gate.open()
        thread.join(timeout=120)
        assert Job.objects.filter(
            kind="node.converge", object_id=str(office_node.pk), status=Job.FAILED
        ).exists(), "the converge cut off by the dead sshd did not fail"
        assert ET.parse(xml_path).getroot().findtext("server_name") == renamed  # installed
        assert f"https://{OFFICE_HOST}/" in discovery(office.address)  # still the old run
        gate.remove()
        nodes.install(office)
        start_sshd(office)
        response = client.post(
            reverse("node-converge", args=[office_node.pk]), {"dryRun": False}, format="json"
        )
        job = Job.objects.get(pk=response.json()["id"])
        assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
        assert f"https://{renamed}/" in discovery(office.address)
        state = NodeConvergeState.objects.get(node=office_node)
        assert state.desired_generation == state.applied_generation
        assert lb_node.pk
