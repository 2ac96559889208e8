"""Telemetry: runtime /metrics parsing (requests, errors, latency quantiles) and the agent's own figures."""

from __future__ import annotations

from agent.telemetry import TelemetryCollector, parse_prometheus, quantile, rss_bytes, runtime_stats

METRICS = """\
# HELP edgeport_requests_total Requests answered, by endpoint and HTTP status.
# TYPE edgeport_requests_total counter
edgeport_requests_total{service="s",endpoint="health",code="200"} 500
edgeport_requests_total{service="s",endpoint="score",code="200"} 90
edgeport_requests_total{service="s",endpoint="score",code="400"} 10
# TYPE edgeport_request_errors_total counter
edgeport_request_errors_total{service="s",endpoint="score"} 10
# TYPE edgeport_request_duration_seconds histogram
edgeport_request_duration_seconds_bucket{service="s",endpoint="health",le="0.001"} 500
edgeport_request_duration_seconds_bucket{service="s",endpoint="score",le="0.001"} 0
edgeport_request_duration_seconds_bucket{service="s",endpoint="score",le="0.01"} 50
edgeport_request_duration_seconds_bucket{service="s",endpoint="score",le="0.1"} 99
edgeport_request_duration_seconds_bucket{service="s",endpoint="score",le="+Inf"} 100
edgeport_request_duration_seconds_sum{service="s",endpoint="score"} 1.5
edgeport_request_duration_seconds_count{service="s",endpoint="score"} 100
"""


def test_scoring_traffic_only_and_errors_counted_once() -> None:
    stats = runtime_stats(parse_prometheus(METRICS))
    assert stats.requests == 100  # the 500 health probes are the agent's own traffic
    assert stats.errors == 10  # from the error counter, not again from the 400 code
    assert stats.buckets == {0.001: 0, 0.01: 50, 0.1: 99, float("inf"): 100}


def test_quantiles_interpolate_inside_buckets() -> None:
    buckets = {0.001: 0.0, 0.01: 50.0, 0.1: 99.0, float("inf"): 100.0}
    assert abs(quantile(buckets, 0.5) - 0.01) < 1e-9
    assert abs(quantile(buckets, 0.99) - 0.1) < 1e-9
    assert quantile({}, 0.5) is None and quantile({1.0: 0.0}, 0.5) is None


def test_errors_from_status_codes_when_there_is_no_error_counter() -> None:
    text = 'x_requests_total{code="200"} 7\nx_requests_total{code="503"} 3\n'
    stats = runtime_stats(parse_prometheus(text))
    assert (stats.requests, stats.errors) == (10, 3)


def test_system_points_report_the_agents_rss() -> None:
    points = {p.metric: p.value for p in TelemetryCollector().system_points()}
    assert points["agent.rss_bytes"] == rss_bytes() or abs(points["agent.rss_bytes"] - rss_bytes()) < 5 * 2**20
    assert points["agent.rss_bytes"] > 10 * 2**20
    assert 0 <= points["device.cpu_percent"] <= 100


def test_process_figures_are_read_once_per_interval_however_many_agents_ask(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from agent import telemetry

    reads: list[str] = []
    monkeypatch.setattr(telemetry, "_figures", {})
    monkeypatch.setattr(telemetry, "_read_system_cpu", lambda: reads.append("stat") or (1.0, 2.0))
    collectors = [TelemetryCollector() for _ in range(50)]  # agents of one fleet process
    for c in collectors:
        c.system_points()
    assert reads == ["stat"]  # one /proc/stat read for all of them within the second
    monkeypatch.setattr(telemetry, "PROCESS_FIGURES_TTL_S", 0.0)
    collectors[0].system_points()
    assert reads == ["stat", "stat"]  # and a fresh one once the interval has passed
