"""A converge job survives one dropped SSH connection; a timeout is not retried.

Real node and real sshd (tests/converge/conftest.py). The drop is injected by wrapping the
real converge: the first attempt closes the real connection and raises what the connector
raises when a connection is lost mid-command, because a drop at an exact moment cannot be
produced on demand. What is under test is the job's handling of it.
"""

from __future__ import annotations

from collections.abc import Iterator

import paramiko
import pytest
from django.urls import reverse

from deploy import converge
from deploy.connector.base import CommandTimeout, TransientConnectorError
from deploy.services import registry
from servers.models import Node, Zone
from tests.fixtures import Cast, token_client
from tests.servers.conftest import controller_key, controller_pkey, zone  # noqa: F401
from tests.servers.nodes import PRIVATE_PATHS

from .conftest import approved_node, trusting_cluster

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def bare_node(
    tmp_path_factory: pytest.TempPathFactory,
    controller_pkey: paramiko.PKey,  # noqa: F811
    controller_key,  # noqa: F811
    zone: Zone,  # noqa: F811
    cast: Cast,
    monkeypatch: pytest.MonkeyPatch,
    settings,
) -> Iterator[Node]:
    """An approved node with no services to configure: a converge only talks to it."""
    monkeypatch.setattr(registry, "SERVICES", [])
    settings.UMS_CONVERGE_ON_APPROVAL = False
    settings.UMS_AUTO_CONVERGE = False
    workdir = tmp_path_factory.mktemp("retry")
    with trusting_cluster(workdir, 1, controller_pkey, PRIVATE_PATHS) as cluster:
        yield approved_node(zone, cast, cluster.nodes[0], ["smtp"])


def converge_job(cast: Cast, node: Node):
    from ums.models import Job

    response = token_client(cast.sub_admin).post(
        reverse("node-converge", args=[node.pk]), {}, format="json"
    )
    assert response.status_code == 202, response.content
    return Job.objects.get(pk=response.json()["id"])


def failing_first(monkeypatch: pytest.MonkeyPatch, error: type[Exception]) -> list[int]:
    """Make the first converge attempt lose its connection with ``error``; count calls."""
    real = converge.converge
    calls: list[int] = []

    def flaky(conn, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            conn.close()
            raise error("connection to the node lost while running a command", host=conn.host)
        return real(conn, *args, **kwargs)

    monkeypatch.setattr(converge, "converge", flaky)
    return calls


def test_a_dropped_connection_is_converged_again_from_the_start(
    cast: Cast, bare_node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ums.models import Job

    calls = failing_first(monkeypatch, TransientConnectorError)
    job = converge_job(cast, bare_node)
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    assert len(calls) == 2
    assert "converging again from the start" in job.log


def test_a_timeout_is_not_retried(
    cast: Cast, bare_node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ums.models import Job

    calls = failing_first(monkeypatch, CommandTimeout)
    job = converge_job(cast, bare_node)
    assert job.status == Job.FAILED
    assert len(calls) == 1
    assert "CommandTimeout" in job.error
