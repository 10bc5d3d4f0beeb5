"""The held-message page never waits on a node; its content arrives separately, bounded.

A real "node" that accepts TCP and never speaks SSH (a plain listening socket that holds
every connection open) stands for the hanging node an outside test found holding the page
for 44 s: the page answers without touching it, and the content fragment answers with a
clear message once the bounded read gives up.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.urls import reverse

from deploy.connector.base import TransientConnectorError
from deploy.connector.keys import generate_private_key, public_key_openssh
from deploy.connector.ssh import SSHConnector, fetch_host_key
from servers import actions as server_actions
from servers.models import Node, NodeStatus
from tests.fixtures import Cast
from tests.servers.nodes import controller_key_row, new_pkey
from tests.spamhold.held import make_held
from ums import context

pytestmark = pytest.mark.django_db

TIMEOUT = 2  # UMS_SPAMHOLD_CONTENT_TIMEOUT and the connector timeouts in these tests
BOUND = TIMEOUT * 5 + 5  # generous: every node step at its timeout, plus slack


class SilentNode:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte (no SSH banner)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(conn)  # held open, never answered

    def close(self) -> None:
        self.listener.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentNode]:
    node = SilentNode()
    yield node
    node.close()


@pytest.fixture(autouse=True)
def fresh_action_context() -> Iterator[None]:
    with context.acting(channel=context.CHANNEL_SYSTEM):
        yield


@pytest.fixture
def hanging_node(cast: Cast, silent: SilentNode, settings: Any) -> Node:
    settings.UMS_SPAMHOLD_CONTENT_TIMEOUT = TIMEOUT
    settings.UMS_SSH_CONNECT_TIMEOUT = 60  # the bounded read must not use these
    settings.UMS_SSH_RETRIES = 3
    controller_key_row(new_pkey())
    zone = server_actions.create_zone(
        actor=None, customer=cast.government, name="Silent DC", location="UB"
    )
    host_key = public_key_openssh(generate_private_key("ecdsa"), "")
    return Node.objects.create(
        customer=zone.customer,
        customer_path=zone.customer_path,
        zone=zone,
        hostname="silent.example",
        addresses=["127.0.0.1"],
        ssh_address="127.0.0.1",
        ssh_port=silent.port,
        reported_host_keys=[host_key],
        pinned_host_keys=[host_key],
        controller_key_version=1,
        roles=["smtp"],
        status=NodeStatus.ACTIVE,
    )


def _held_on(node: Node, cast: Cast, client: Any) -> Any:
    """A message held on ``node``, and ``client`` logged in as its administrator."""
    client.force_login(cast.sub_admin)
    client.cookies["django_language"] = "en"
    return make_held(cast.ministry, node=node, node_name=node.hostname)


def test_connector_gives_up_on_a_node_without_banner(silent: SilentNode) -> None:
    started = time.monotonic()
    with pytest.raises(TransientConnectorError) as fetched:
        fetch_host_key("127.0.0.1", silent.port, timeout=1)
    assert isinstance(fetched.value.__cause__, TimeoutError)
    pkey = new_pkey()
    conn = SSHConnector(
        "127.0.0.1",
        silent.port,
        pkey=pkey,
        known_host_keys=[public_key_openssh(pkey, "")],
        connect_timeout=1,
        retries=0,
    )
    with pytest.raises(TransientConnectorError) as connected:
        conn.connect()
    assert isinstance(connected.value.__cause__, TimeoutError)
    assert len(silent.accepted) == 2  # TCP was accepted both times: the banner never came
    assert time.monotonic() - started < 2 + 10


def test_message_page_answers_without_asking_the_node(
    cast: Cast, client: Any, hanging_node: Node, silent: SilentNode
) -> None:
    held = _held_on(hanging_node, cast, client)
    page = client.get(reverse("spamhold:message", args=[held.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    content_url = reverse("spamhold:content", args=[held.pk])
    assert f'data-fragment-url="{content_url}?next=' in html  # loaded after the page
    assert f'href="{content_url}?next=' in html  # and a link without JavaScript
    log_url = reverse("spamhold:log", args=[held.pk])
    assert f'data-fragment-url="{log_url}?next=' in html and f'href="{log_url}?next=' in html
    assert "js/fragment.js" in html
    assert silent.accepted == []  # the page did not touch the node


def test_log_fragment_answers_a_hanging_node_with_a_clear_message(
    cast: Cast, client: Any, hanging_node: Node, silent: SilentNode
) -> None:
    held = _held_on(hanging_node, cast, client)
    url = reverse("spamhold:log", args=[held.pk])
    started = time.monotonic()
    fragment = client.get(url, headers={"X-Requested-With": "fetch"})
    assert time.monotonic() - started < BOUND
    assert fragment.status_code == 200 and "<html" not in fragment.content.decode()
    assert f"The node did not answer within {TIMEOUT} seconds" in fragment.content.decode()
    assert len(silent.accepted) == 1
    page = client.get(url)
    assert page.status_code == 200 and "Receipt log" in page.content.decode()


def test_content_fragment_answers_a_hanging_node_with_a_clear_message(
    cast: Cast, client: Any, hanging_node: Node, silent: SilentNode
) -> None:
    held = _held_on(hanging_node, cast, client)
    url = reverse("spamhold:content", args=[held.pk])
    started = time.monotonic()
    fragment = client.get(url, headers={"X-Requested-With": "fetch"})
    assert time.monotonic() - started < BOUND
    assert fragment.status_code == 200
    text = fragment.content.decode()
    assert f"The node did not answer within {TIMEOUT} seconds" in text
    assert "<html" not in text  # a fragment, not a page
    assert fragment["Cache-Control"] == "no-store"
    assert len(silent.accepted) == 1  # it really asked the node, once (no retries)
    page = client.get(url)  # without JavaScript: the same answer as a page of its own
    assert page.status_code == 200 and "<html" in page.content.decode()
    assert f"The node did not answer within {TIMEOUT} seconds" in page.content.decode()


def test_content_fragment_of_an_unreachable_node_says_so(
    cast: Cast, client: Any, hanging_node: Node, silent: SilentNode
) -> None:
    silent.close()  # nothing listens any more: connection refused
    held = _held_on(hanging_node, cast, client)
    url = reverse("spamhold:content", args=[held.pk])
    fragment = client.get(url, headers={"X-Requested-With": "fetch"})
    assert fragment.status_code == 200
    assert "The content could not be read from the node" in fragment.content.decode()


def test_content_needs_the_permission_and_scope(cast: Cast, client: Any) -> None:
    held = make_held(cast.department)
    url = reverse("spamhold:content", args=[held.pk])
    client.force_login(cast.ministry_viewer)
    assert client.get(url).status_code == 403
    client.force_login(cast.sibling_admin)
    assert client.get(url).status_code == 404
