"""No request a client can send gets a 500: schemathesis over the whole OpenAPI schema.

The schema is loaded from ``/api/schema/`` of the real WSGI application and every
operation is called in process (same database connection, so on the test database) with a
real API token of the root administrator. The run is bounded and reproducible: a few
derandomized examples per operation, so CI stays well under three minutes and a failure
repeats on the next run. With no node enrolled, node jobs (run eagerly in tests) have
nothing to reach, so nothing leaves the machine.

``OPTIONS`` is not in the schema; a separate test sends it to every route.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings

from tests.fixtures import Cast

pytestmark = pytest.mark.django_db

# Small and fixed: 135 operations x this many cases is the bound of the run.
MAX_EXAMPLES = 6


@pytest.fixture
def root_token(cast: Cast, api: Any) -> str:
    client = api(cast.root_admin)
    return client._credentials["HTTP_AUTHORIZATION"]


@pytest.fixture
def api_schema(root_token: str) -> Any:
    # The WSGI handler closes the connection after each response; in a test that would
    # drop the test transaction (Django's test client disconnects the same receivers).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield schemathesis.openapi.from_wsgi(
        "/api/schema/", get_wsgi_application(), headers={"Authorization": root_token}
    )
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _run_operation(operation: Any, token: str) -> list[str]:
    """Cases of ``operation`` that got a server error, as "METHOD path -> status" lines."""
    failures: list[str] = []

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def probe(case: Any) -> None:
        response = case.call(headers={"Authorization": token})
        if response.status_code >= 500:
            failures.append(
                f"{case.method} {case.formatted_path} query={case.query!r} "
                f"body={case.body!r} -> {response.status_code}"
            )

    probe()
    return failures


def test_no_operation_answers_with_a_server_error(api_schema: Any, root_token: str) -> None:
    failures: list[str] = []
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1
        failures += _run_operation(operation, root_token)[:3]
    assert operations > 100  # the whole schema, not a fragment of it
    assert not failures, "\n".join(failures)


def test_options_on_every_route_is_not_a_server_error(api_schema: Any, root_token: str, client):
    paths = list(api_schema.raw_schema["paths"])
    assert len(paths) > 50
    failures = []
    for path in paths:
        url = re.sub(r"\{[^}]+\}", "1", path)
        response = client.options(url, HTTP_AUTHORIZATION=root_token)
        if response.status_code >= 500:
            failures.append(f"OPTIONS {url} -> {response.status_code}")
    assert not failures, "\n".join(failures)
