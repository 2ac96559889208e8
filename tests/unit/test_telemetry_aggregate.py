"""Telemetry in time buckets: min/avg/max per bucket, counter rates, metric names by their end, bad windows."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from hub.api.app import create_app
from hub.errors import BadInput
from hub.services import HubServices
from tests.unit.access_support import token_headers
from tests.unit.enrollment import enroll

NOW_S = 1_800_000_000.0  # a bucket edge (divisible by 60): the window's buckets are easy to name
NOW_MS = int(NOW_S * 1000)


def _points(hub: HubServices, device: str, metric: str, values: list[float], *, service: str = "",
            step_ms: int = 10_000, end_ms: int = NOW_MS) -> None:
    """`values`, oldest first, one every `step_ms`, the last at `end_ms`."""
    n = len(values)
    rows = [(device, service, metric, v, end_ms - (n - 1 - i) * step_ms, "{}") for i, v in enumerate(values)]
    hub.telemetry.store.insert(rows)


def test_gauge_buckets_hold_min_avg_max_across_devices(hub: HubServices) -> None:
    # 60 s buckets over 3 minutes: points every 10 s, two devices.
    _points(hub, "a", "runtime.latency_p99_ms", [1, 2, 3, 4, 5, 6] * 3, end_ms=NOW_MS - 10_000)
    _points(hub, "b", "runtime.latency_p99_ms", [10, 20, 30, 40, 50, 60] * 3, end_ms=NOW_MS - 10_000)
    one = hub.telemetry.aggregate(devices=["a"], metric="runtime.latency_p99_ms", since_s=180, every_s=60,
                                  now_s=NOW_S)
    assert one["kind"] == "gauge"
    assert [(b["min"], b["avg"], b["max"], b["count"]) for b in one["buckets"]] == [(1, 3.5, 6, 6)] * 3
    both = hub.telemetry.aggregate(devices=["a", "b"], metric="runtime.latency_p99_ms", since_s=180, every_s=60,
                                   now_s=NOW_S)
    assert [(b["min"], b["avg"], b["max"], b["count"]) for b in both["buckets"]] == [(1, 19.25, 60, 12)] * 3
    assert [b["at_ms"] for b in both["buckets"]] == [NOW_MS - 180_000, NOW_MS - 120_000, NOW_MS - 60_000]


def test_a_counter_becomes_a_rate_per_second_and_a_restart_counts_from_zero(hub: HubServices) -> None:
    # requests_total at 10 s steps: +50 per step (5/s), then the runtime restarts (back to 20), then +50 again.
    values = [0, 50, 100, 150, 200, 250, 20, 70, 120]
    _points(hub, "a", "runtime.requests_total", values, service="scorer", end_ms=NOW_MS - 1)
    out = hub.telemetry.aggregate(devices=["a"], metric="requests_total", since_s=100, every_s=10, now_s=NOW_S)
    assert out["metric"] == "runtime.requests_total" and out["kind"] == "rate"
    rates = [b["avg"] for b in out["buckets"]]
    assert rates == [5.0, 5.0, 5.0, 5.0, 5.0, 2.0, 5.0, 5.0]  # the first bucket has nothing to rise from
    # Two devices: sum is the fleet's requests/s, min and max the slowest and busiest device.
    _points(hub, "b", "runtime.requests_total", [0, 10, 20], service="scorer", end_ms=NOW_MS - 1)
    out = hub.telemetry.aggregate(devices=["a", "b"], metric="runtime.requests_total", since_s=30, every_s=10,
                                  service="scorer", now_s=NOW_S)
    last = out["buckets"][-1]
    assert (last["min"], last["max"], last["sum"], last["count"]) == (1.0, 5.0, 6.0, 2)


def test_two_services_on_one_device_are_separate_counters(hub: HubServices) -> None:
    _points(hub, "a", "runtime.requests_total", [0, 100, 200], service="one", end_ms=NOW_MS - 1)
    _points(hub, "a", "runtime.requests_total", [5000, 5010, 5020], service="two", end_ms=NOW_MS - 1)
    out = hub.telemetry.aggregate(devices=["a"], metric="runtime.requests_total", since_s=30, every_s=10,
                                  now_s=NOW_S)
    assert [b["sum"] for b in out["buckets"]] == [11.0, 11.0]  # 10/s + 1/s, never a jump between the two


def test_a_metric_may_be_named_by_its_end_when_that_names_one(hub: HubServices) -> None:
    _points(hub, "a", "runtime.latency_p99_ms", [1.0])
    _points(hub, "a", "runtime.latency_p50_ms", [1.0])
    _points(hub, "a", "agent.rss_bytes", [1.0])
    since_ms = NOW_MS - 60_000
    assert hub.telemetry.resolve_metric(["a"], "p99_ms", since_ms) == "runtime.latency_p99_ms"
    assert hub.telemetry.resolve_metric(["a"], "rss_bytes", since_ms) == "agent.rss_bytes"
    with pytest.raises(BadInput, match=r"ambiguous: it could be runtime\.latency_p50_ms, runtime\.latency_p99_ms"):
        hub.telemetry.resolve_metric(["a"], "ms", since_ms)
    with pytest.raises(BadInput, match="no metric of that name or ending in it"):
        hub.telemetry.resolve_metric(["a"], "p95_ms", since_ms)


@pytest.mark.parametrize(
    ("since_s", "every_s", "message"),
    [(0, 60, "since must be a positive"), (3600, 0, "every must be at least"), (86400 * 7, 1, "at most 2000")],
)
def test_bad_windows_are_refused_naming_the_bound(hub: HubServices, since_s: float, every_s: float,
                                                  message: str) -> None:
    with pytest.raises(BadInput, match=message):
        hub.telemetry.aggregate(devices=["a"], metric="x.y", since_s=since_s, every_s=every_s)


def test_rest_routes_for_a_device_and_across_a_service(hub: HubServices) -> None:
    enroll(hub, "cam-01", ["site=lab"])
    enroll(hub, "cam-02", ["site=lab"])
    now_ms = int(time.time() * 1000)
    for device, value in (("cam-01", 10.0), ("cam-02", 30.0)):
        _points(hub, device, "runtime.latency_p99_ms", [value], service="scorer", end_ms=now_ms - 1000)
    client = TestClient(create_app(hub), headers=token_headers(hub, "viewer"))
    r = client.get("/api/v1/devices/cam-01/telemetry/aggregate", params={"metric": "p99_ms", "since": 60})
    assert r.status_code == 200, r.text
    assert r.json()["device"] == "cam-01" and [b["avg"] for b in r.json()["buckets"]] == [10.0]
    r = client.get("/api/v1/devices/nobody/telemetry/aggregate", params={"metric": "p99_ms"})
    assert r.status_code == 404 and "nobody" in r.json()["error"]["message"]
    r = client.get("/api/v1/devices/cam-01/telemetry/aggregate", params={"metric": "p99_ms", "since": -1})
    assert r.status_code == 400 and "since" in r.json()["error"]["message"]
    r = client.get("/api/v1/devices/cam-01/telemetry/aggregate",
                   params={"metric": "p99_ms", "since": 86400, "every": 1})
    assert r.status_code == 400 and "at most 2000" in r.json()["error"]["message"]
    r = client.get("/api/v1/services/scorer/telemetry/aggregate", params={"metric": "p99_ms"})
    assert r.status_code == 404  # no such service yet
