"""The milter-service base (deploy/services/milter.py) on its own: a service that only
declares names gets the systemd drop-in, the enable/verb steps and the on/off setting,
and its handshake check tells a milter from a port that speaks something else. Both
real users (OpenDKIM, OpenDMARC) are tested in their own packages."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from types import ModuleType

import pytest

from deploy.services import milter, probes
from deploy.services.base import DesiredState, ManagedFile, NodeView
from tests.services.localconn import LocalConnector
from tests.services.opendkim.test_opendkim import SystemdNode
from tests.services.opendmarc.test_opendmarc import ums_filter  # noqa: F401


class Sample(milter.MilterService):
    name = "sample"
    config_root = "/etc/ums-sample"
    setting = "sample_checks"
    binary, conf_flag, conf_name = "sampled", "-c", "sample.conf"
    pidfile = "/run/ums-sample/sample.pid"
    unit, role_word = "sampled", "sampler"

    def __init__(self, port: int = 8899) -> None:
        self.port = port
        self.started: list[str] = []

    def unit_lines(self) -> list[str]:
        return ["ExecStart=", "ExecStart=/usr/sbin/sampled"]

    def systemd_verb(self, changed: list[ManagedFile]) -> str:
        return "restart" if changed else "start"

    def activate_without_systemd(self, conn, changed) -> None:
        self.started.append("own")

    def render(self, state: DesiredState) -> list[ManagedFile]:
        return []


def state(**settings) -> DesiredState:
    return DesiredState(node=NodeView(1, "mx1.example", "10.0.0.2", ("smtp",), "debian", 1),
                        domains=[], settings=settings)  # fmt: skip


def test_declared_names_give_the_drop_in_unit_steps_and_setting() -> None:
    service = Sample()
    assert service.milter == "inet:127.0.0.1:8899"
    assert milter.entry(service.milter) == "{ inet:127.0.0.1:8899, default_action=accept }"
    assert service.applies_to_state(state())
    assert not service.applies_to_state(state(sample_checks=False))
    node = SystemdNode()
    service.activate(node, [])
    drop_in = node.files["/etc/systemd/system/sampled.service.d/ums.conf"].decode()
    assert drop_in == (
        "# Managed by UMS (deploy/services/sample): the sampler with UMS's configuration.\n"
        "[Service]\nType=forking\nPIDFile=/run/ums-sample/sample.pid\n"
        "ExecStart=\nExecStart=/usr/sbin/sampled\nRestart=on-failure\n"
    )
    assert ["systemctl", "enable", "sampled"] in node.commands
    assert node.commands[-1] == ["systemctl", "start", "sampled"]
    node.commands.clear()
    service.activate(node, [ManagedFile("/etc/ums-sample/sample.conf", b"x")])
    assert ["systemctl", "daemon-reload"] not in node.commands  # drop-in unchanged
    assert node.commands[-1] == ["systemctl", "restart", "sampled"]
    assert service.started == []


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, list]]:
    server = socket.create_server(("127.0.0.1", 0))
    handlers: list = []

    def serve() -> None:
        while True:
            try:
                client, _addr = server.accept()
            except OSError:
                return
            with client:
                handlers[0](client)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server, handlers
    server.close()


def test_the_handshake_tells_a_milter_from_another_server(
    listener,
    ums_filter: ModuleType,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, handlers = listener
    monkeypatch.setattr(probes, "PROBE_SECONDS", 1)
    service = Sample(server.getsockname()[1])

    def real_milter(client: socket.socket) -> None:
        stream = client.makefile("rwb")
        # The probe hangs up once it has its answer.
        with contextlib.suppress(ConnectionError):
            ums_filter.Milter(stream, stream, None).run()

    handlers.append(real_milter)
    assert service.answers(LocalConnector())
    handlers[0] = lambda client: client.sendall(b"220 smtp.example ESMTP\r\n")
    assert not service.answers(LocalConnector())
