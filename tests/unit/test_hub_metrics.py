"""The hub's /metrics: Prometheus text that parses, with the figures an operator watches."""

from __future__ import annotations

import re
import time
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from hub.api.app import create_app
from hub.services import HubServices
from protos.edgeport.v1 import agent_pb2
from tests.support import REPO
from tests.unit.access_support import token_headers
from tests.unit.enrollment import enroll


def scrape(client: TestClient) -> dict[str, list[tuple[dict[str, str], float]]]:
    """`GET /metrics`, parsed by the Prometheus project's own parser: {sample name: [(labels, value)]}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    """The one sample of `name` whose labels include `labels`."""
    found = [v for lbl, v in samples.get(name, []) if labels.items() <= lbl.items()]
    assert len(found) == 1, f"{name}{labels}: {samples.get(name)}"
    return found[0]


def test_hub_metrics_parse_and_count_devices_messages_pushes_and_writes(hub: HubServices) -> None:
    client = TestClient(create_app(hub), headers=token_headers(hub, "viewer"))
    first = scrape(client)
    assert value(first, "edgeport_hub_devices_online", transport="grpc") == 0
    assert value(first, "edgeport_hub_devices_online", transport="mqtt") == 0
    assert value(first, "edgeport_hub_agent_messages_ingested_total") == 0
    assert "edgeport_hub_rollouts" not in first  # declared, no series until the hub stages rollouts

    enroll(hub, "cam-01", ["site=lab"])
    session, _ = hub.control.open_session("cam-01", agent_pb2.Hello(agent_version="t"), transport="mqtt")
    assert hub.control.outgoing(session)  # the device's first DesiredState goes out
    batch = agent_pb2.TelemetryBatch(points=[agent_pb2.TelemetryPoint(metric="agent.rss_bytes", value=1.0,
                                                                      at_ms=_now_ms())])
    acks: list[agent_pb2.HubMessage] = []
    hub.control.submit(session, agent_pb2.AgentMessage(seq=1, telemetry=batch), acks.append)
    assert hub.control.ingest.wait_idle()

    after = scrape(client)
    assert value(after, "edgeport_hub_devices_online", transport="mqtt") == 1
    assert value(after, "edgeport_hub_devices", state="enrolled") == 1
    assert value(after, "edgeport_hub_agent_messages_ingested_total") == 1
    assert value(after, "edgeport_hub_telemetry_points_ingested_total") == 1
    assert value(after, "edgeport_hub_desired_state_pushes_total") == 1
    writes_before = value(first, "edgeport_hub_store_write_duration_seconds_count")
    assert value(after, "edgeport_hub_store_write_duration_seconds_count") > writes_before


def test_rest_latency_is_labelled_by_route_template_not_raw_path(hub: HubServices) -> None:
    client = TestClient(create_app(hub), headers=token_headers(hub, "viewer"))
    for name in ("one", "two", "three"):
        assert client.get(f"/api/v1/devices/{name}").status_code == 404
    samples = scrape(client)
    route = "/api/v1/devices/{name}"
    assert value(samples, "edgeport_hub_http_request_duration_seconds_count", route=route, status="404") == 3
    assert not [lbl for lbl, _ in samples["edgeport_hub_http_request_duration_seconds_count"]
                if lbl["route"].endswith(("one", "two", "three"))]
    client.get("/no/such/thing")
    assert value(scrape(client), "edgeport_hub_http_request_duration_seconds_count", route="unmatched") == 1


def test_two_hubs_in_one_process_keep_their_own_figures(hub: HubServices, tmp_path: Path) -> None:
    other = HubServices.open(tmp_path / "other")
    try:
        a = TestClient(create_app(hub), headers=token_headers(hub, "viewer"))
        b = TestClient(create_app(other), headers=token_headers(other, "viewer"))
        a.get("/api/v1/devices")
        counts_b = scrape(b).get("edgeport_hub_http_request_duration_seconds_count", [])
        assert not [lbl for lbl, _ in counts_b if lbl["route"] == "/api/v1/devices"]
    finally:
        other.close()


def _now_ms() -> int:
    return int(time.time() * 1000)


def test_every_hub_metric_the_grafana_dashboard_charts_exists(hub: HubServices) -> None:
    client = TestClient(create_app(hub), headers=token_headers(hub, "viewer"))
    client.get("/api/v1/devices")  # one request, so the labelled histogram has series
    hub.telemetry.store.insert([("d", "", "m.x", 1.0, _now_ms(), "{}")])  # one commit
    exposed = {name for name in scrape(client)}
    response = client.get("/metrics")
    declared = {f.name for f in text_string_to_metric_families(response.text)}  # families with no series too
    charted = set(re.findall(r"edgeport_hub_[a-z_]+", (REPO / "docs" / "grafana-edgeport.json").read_text()))
    assert charted, "the Grafana dashboard charts no hub metric"
    missing = sorted(n for n in charted if n not in exposed and n not in declared)
    assert not missing, f"docs/grafana-edgeport.json charts metrics the hub does not expose: {missing}"
