"""CalDAV/CardDAV end to end on a real Radicale (Debian ``radicale``) on a cloud-files node.

Mailboxes created through the API become DAV users of the node (converged like mail),
each with a calendar (events and tasks) and a contacts collection; the customer's global
address book is a shared read-only CardDAV address book that a CardDAV client reads with
``addressbook-query``; a mailbox added later appears in it; a mailbox denied
CalDAV/CardDAV gets 401; nobody reads another's calendar unless the ``dav_sharing``
policy allows it, and then read-only; another customer's users cannot read the book.

The client is plain WebDAV over HTTP (PROPFIND/REPORT/PUT with ``requests``), what any
CardDAV client sends; no DAV client library is installed in the test environment.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from urllib.parse import unquote

import paramiko
import pytest
import requests
from defusedxml import ElementTree as ET
from django.urls import reverse

from deploy.services import registry
from deploy.services.radicale import SERVICE as RADICALE
from servers.models import Node, Zone
from tests.fixtures import Cast
from tests.harness.sshnodes import TestNode
from tests.servers.nodes import PRIVATE_PATHS

from .conftest import approved_node, trusting_cluster
from .test_faults import converge_job, heal_by_reconciler, phase_hook  # noqa: F401
from .test_mail_flow import DOMAIN, PASSWORD, assert_jobs_succeeded, setup_mail

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

DAV_PRIVATE_PATHS = (
    *PRIVATE_PATHS,
    "/etc/ums-radicale",
    "/var/lib/ums-radicale",
    "/run/ums-radicale",
)
NS = {"d": "DAV:", "card": "urn:ietf:params:xml:ns:carddav", "cal": "urn:ietf:params:xml:ns:caldav"}
QUERY = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<card:addressbook-query xmlns:d="DAV:" xmlns:card="urn:ietf:params:xml:ns:carddav">'
    "<d:prop><d:getetag/><card:address-data/></d:prop></card:addressbook-query>"
)
LIST = (
    '<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop>'
    "<d:resourcetype/><d:displayname/></d:prop></d:propfind>"
)


@pytest.fixture
def dav_node(
    tmp_path_factory: pytest.TempPathFactory,
    controller_pkey: paramiko.PKey,
    controller_key,
    zone: Zone,
    cast: Cast,
    monkeypatch: pytest.MonkeyPatch,
    settings,
) -> Iterator[tuple[TestNode, Node]]:
    """One approved cloud-files node converged with Radicale."""
    monkeypatch.setattr(registry, "SERVICES", [RADICALE])
    settings.UMS_CONVERGE = {"dav_auth_delay": 0}
    settings.UMS_AUTO_CONVERGE = True
    settings.UMS_CONVERGE_ON_APPROVAL = True
    workdir = tmp_path_factory.mktemp("dav")
    with trusting_cluster(workdir, 1, controller_pkey, DAV_PRIVATE_PATHS) as cluster:
        (tnode,) = cluster.nodes
        yield tnode, approved_node(zone, cast, tnode, ["cloudfiles"])


class Dav:
    """A CardDAV/CalDAV client session as one user."""

    def __init__(self, tnode: TestNode, user: str, password: str = PASSWORD) -> None:
        self.base = f"http://{tnode.address}:5232"
        self.session = requests.Session()
        self.session.auth = (user, password)

    def request(self, method: str, path: str, body: str = "", **headers: str):
        headers.setdefault("Content-Type", "application/xml; charset=utf-8")
        return self.session.request(
            method, self.base + path, data=body.encode(), headers=headers, timeout=30
        )

    def collections(self, path: str) -> dict[str, list[str]]:
        """Children of ``path``: href -> resource types (PROPFIND depth 1)."""
        response = self.request("PROPFIND", path, LIST, Depth="1")
        assert response.status_code == 207, response.text
        found = {}
        for item in ET.fromstring(response.content).findall("d:response", NS):
            href = unquote(item.findtext("d:href", namespaces=NS) or "")
            types = item.find(".//d:resourcetype", NS)
            found[href] = [child.tag.split("}")[1] for child in types] if types is not None else []
        return found

    def cards(self, path: str) -> tuple[int, list[str]]:
        """``addressbook-query`` REPORT: status and the vCards returned."""
        response = self.request("REPORT", path, QUERY, Depth="1")
        if response.status_code != 207:
            return response.status_code, []
        root = ET.fromstring(response.content)
        return 207, [
            e.text or "" for e in root.iter("{urn:ietf:params:xml:ns:carddav}address-data")
        ]


def emails(cards: list[str]) -> list[str]:
    found = []
    for card in cards:
        for line in card.splitlines():
            if line.startswith("EMAIL"):
                found.append(line.split(":", 1)[1].strip())
    return sorted(found)


def gal_path(customer_id: int) -> str:
    return f"/gal-{customer_id}/addressbook/"


EVENT = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\n"
    "UID:meeting-1\r\nDTSTAMP:20261207T100000Z\r\nDTSTART:20261208T100000Z\r\n"
    "DTEND:20261208T110000Z\r\nSUMMARY:Budget\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


def new_mailbox(client, domain_id: int, local: str, **extra) -> dict:
    response = client.post(
        reverse("mail-mailbox-list"),
        {"domain": domain_id, "localPart": local, "password": PASSWORD, **extra},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def set_access(client, mailbox_id: int, **access: str) -> None:
    response = client.patch(
        reverse("mail-mailbox-detail", args=[mailbox_id]),
        {"protocolAccess": access},
        format="json",
    )
    assert response.status_code == 200, response.content


def test_gal_is_readable_over_carddav_and_access_follows_the_policy(
    cast: Cast, dav_node: tuple[TestNode, Node]
) -> None:
    tnode, _node = dav_node
    client, domain = setup_mail(cast)
    customer = domain["customer"]
    bob = new_mailbox(client, domain["id"], "bob", displayName="Bob Builder")
    assert_jobs_succeeded()
    alice = Dav(tnode, f"alice@{DOMAIN}")

    # Each user has a calendar (events and tasks) and an address book of their own.
    own = alice.collections(f"/alice@{DOMAIN}/")
    assert "calendar" in own[f"/alice@{DOMAIN}/calendar/"], own
    assert "addressbook" in own[f"/alice@{DOMAIN}/contacts/"], own
    # The global address book, read by a CardDAV client: both mailboxes, as vCards.
    assert "addressbook" in alice.collections(gal_path(customer))[gal_path(customer)]
    status, cards = alice.cards(gal_path(customer))
    assert status == 207
    assert emails(cards) == [f"alice@{DOMAIN}", f"bob@{DOMAIN}"]
    assert any("FN:Bob Builder" in c for c in cards), cards
    # Read-only: not even its members may write it.
    card = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:x1\r\nFN:X\r\nEND:VCARD\r\n"
    put = alice.request(
        "PUT", gal_path(customer) + "x1.vcf", card, **{"Content-Type": "text/vcard"}
    )
    assert put.status_code == 403, put.status_code

    # A mailbox added later is in the book after its converge.
    new_mailbox(client, domain["id"], "carol")
    assert_jobs_succeeded()
    assert emails(alice.cards(gal_path(customer))[1]) == [
        f"alice@{DOMAIN}", f"bob@{DOMAIN}", f"carol@{DOMAIN}"
    ]  # fmt: skip

    # Wrong password and a mailbox denied CalDAV/CardDAV: 401.
    assert Dav(tnode, f"alice@{DOMAIN}", "wrong").request("PROPFIND", "/", LIST).status_code == 401
    set_access(client, bob["id"], dav="deny")
    assert_jobs_succeeded()
    denied = Dav(tnode, f"bob@{DOMAIN}").request("PROPFIND", f"/bob@{DOMAIN}/", LIST, Depth="0")
    assert denied.status_code == 401
    set_access(client, bob["id"], dav="inherit")
    assert_jobs_succeeded()
    bob_dav = Dav(tnode, f"bob@{DOMAIN}")

    # Calendars are private: bob writes his, alice can neither read nor write it.
    put = bob_dav.request(
        "PUT", f"/bob@{DOMAIN}/calendar/meeting-1.ics", EVENT, **{"Content-Type": "text/calendar"}
    )
    assert put.status_code == 201, put.text
    bobs_event = f"/bob@{DOMAIN}/calendar/meeting-1.ics"
    assert alice.request("GET", bobs_event).status_code == 403
    assert alice.request("PROPFIND", f"/bob@{DOMAIN}/calendar/", LIST).status_code == 403
    # The policy shares bob's calendar with his customer: readable, still not writable.
    set_access(client, bob["id"], dav_sharing="allow")
    assert_jobs_succeeded()
    got = alice.request("GET", bobs_event)
    assert got.status_code == 200 and "SUMMARY:Budget" in got.text
    put = alice.request("PUT", bobs_event, EVENT, **{"Content-Type": "text/calendar"})
    assert put.status_code == 403
    assert alice.request("GET", f"/bob@{DOMAIN}/contacts/").status_code == 403

    # Another customer's user reads its own book, never this one.
    response = client.post(
        reverse("customer-list"), {"name": "Other Tenant", "parent": cast.government.pk},
        format="json",
    )  # fmt: skip
    other = response.json()["id"]
    response = client.post(
        reverse("mail-domain-list"), {"name": "other.example", "customer": other}, format="json"
    )
    new_mailbox(client, response.json()["id"], "dave")
    assert_jobs_succeeded()
    dave = Dav(tnode, "dave@other.example")
    assert dave.cards(gal_path(customer))[0] == 403
    assert emails(dave.cards(gal_path(other))[1]) == ["dave@other.example"]
    assert dave.request("GET", bobs_event).status_code == 403


def test_node_killed_between_install_and_reload_heals_and_the_book_is_current(
    cast: Cast,
    dav_node: tuple[TestNode, Node],
    settings,
    phase_hook,  # noqa: F811
) -> None:
    """The new users and address book files are live but were never loaded into the store
    (the controller's connection died at the reload step): the reconciler finishes it."""
    from ums.models import Job

    tnode, node = dav_node
    client, domain = setup_mail(cast)
    settings.UMS_CONVERGE_RETRY_MAX_SECONDS = 1
    settings.UMS_AUTO_CONVERGE = False  # the change waits for the converge below
    new_mailbox(client, domain["id"], "erin")
    fired: list[str] = []

    def hook(at: str, service: str) -> None:
        if at == "reload" and service == "radicale" and not fired:
            fired.append(at)
            kill_sshd(tnode)

    phase_hook(hook)
    job = converge_job(cast, node)
    phase_hook(lambda at, service: None)
    assert fired == ["reload"] and job.status == Job.FAILED, job.log
    # Files live, store not loaded: erin may log in but her book lacks her.
    assert f"erin@{DOMAIN}" in tnode.path("/etc/ums-radicale/users").read_text()
    erin = Dav(tnode, f"erin@{DOMAIN}")
    assert f"erin@{DOMAIN}" not in emails(erin.cards(gal_path(domain["customer"]))[1])

    tnode.start()  # sshd back; nothing else is touched by hand
    settings.UMS_AUTO_CONVERGE = True
    job = heal_by_reconciler(node)
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    assert job.result["changed"] == {} and "radicale" in job.result["reloaded"], job.result
    status, cards = erin.cards(gal_path(domain["customer"]))
    assert status == 207 and f"erin@{DOMAIN}" in emails(cards)
    assert "calendar" in erin.collections(f"/erin@{DOMAIN}/")[f"/erin@{DOMAIN}/calendar/"]


def kill_sshd(tnode: TestNode) -> None:
    """SIGKILL the node's sshd and every session: the controller's connection drops."""
    for pid in tnode.processes():
        try:
            with open(f"/proc/{pid}/comm") as handle:
                if handle.read().strip() != "sshd":
                    continue
            os.kill(pid, signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue
    assert tnode._process is not None
    tnode._process.wait(timeout=30)
