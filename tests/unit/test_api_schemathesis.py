"""Property-based requests from the hub's own OpenAPI document (schemathesis) with an admin token: no 5xx.

Every operation gets EXAMPLES generated requests (path values, queries and bodies that follow the
document, and that bend it) against the real app on a real data dir holding a model, a device and a
service; the last test checks that at least MIN_CASES requests were made in all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from hub.api.app import create_app
from hub.services import HubServices
from tests.unit.access_support import token_headers
from tests.unit.enrollment import enroll

EXAMPLES = 45
MIN_CASES = 2000
_made: list[int] = []  # one entry per request sent, across every operation


@pytest.fixture
def admin(hub: HubServices) -> dict[str, str]:
    """An admin token's header for the hub under test."""
    return token_headers(hub, "admin")


@pytest.fixture
def hub_schema(hub: HubServices) -> Iterator[Any]:
    """The app's OpenAPI document, loaded from the app itself (requests go to it in process)."""
    enroll(hub, "dev-1", ["zone=a"])
    digest = hub.blobs.put_bytes(b"onnx bytes")
    hub.registry.register("digits", [{"path": "model.onnx", "digest": digest, "size": 10}])
    hub.deployments.create({"name": "svc", "models": ["digits:1"], "target": "dev-1"})
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(hub))


schema = schemathesis.pytest.from_fixture("hub_schema")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_no_request_from_the_document_makes_the_hub_fail(case: Any, admin: dict[str, str]) -> None:
    _made.append(1)
    case.call_and_validate(headers=admin, checks=[not_a_server_error])


@pytest.mark.slow
def test_enough_requests_were_made() -> None:
    if not _made:
        pytest.skip("the property-based test did not run in this session")
    print(f"{len(_made)} generated requests")
    assert len(_made) >= MIN_CASES, f"only {len(_made)} requests were generated"
