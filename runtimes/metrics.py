"""Prometheus text metrics: requests, errors, request latency, time in model, batch sizes.

Hand-rolled (a few dict and list updates per request) because the hot path is ~100 µs and a
metrics library costs a noticeable share of that.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from typing import Any

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    """Cumulative-bucket histogram in Prometheus' shape."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Add one observation."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def render(self, name: str, labels: str) -> list[str]:
        """Exposition lines for this histogram."""
        sep = "," if labels else ""
        lines, acc = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            acc += n
            lines.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {acc}')
        lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum{{{labels}}} {self.sum}")
        lines.append(f"{name}_count{{{labels}}} {self.count}")
        return lines


class Metrics:
    """All the runtime's counters; `render()` is the /metrics body."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.errors: dict[str, int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.model_time = Histogram(LATENCY_BUCKETS)
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.connections: Any = None  # the HTTP front's Connections (open set, refused, timed_out)
        self.execution_providers: list[str] = []  # the ONNX session's, as session.get_providers() says

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        self.requests[(endpoint, status)] += 1
        if status >= 400:
            self.errors[endpoint] += 1
        hist = self.latency.get(endpoint)
        if hist is None:
            hist = self.latency[endpoint] = Histogram(LATENCY_BUCKETS)
        hist.observe(seconds)

    def render(self) -> bytes:
        """Prometheus text exposition format 0.0.4."""
        svc = f'service="{self.service}"'
        out = [
            "# HELP edgeport_requests_total Requests answered, by endpoint and HTTP status.",
            "# TYPE edgeport_requests_total counter",
        ]
        out += [
            f'edgeport_requests_total{{{svc},endpoint="{e}",code="{c}"}} {n}'
            for (e, c), n in sorted(self.requests.items())
        ]
        out += [
            "# HELP edgeport_request_errors_total Requests answered with status >= 400.",
            "# TYPE edgeport_request_errors_total counter",
        ]
        out += [f'edgeport_request_errors_total{{{svc},endpoint="{e}"}} {n}' for e, n in sorted(self.errors.items())]
        out += [
            "# HELP edgeport_request_duration_seconds Time from request parsed to response written.",
            "# TYPE edgeport_request_duration_seconds histogram",
        ]
        for e, h in sorted(self.latency.items()):
            out += h.render("edgeport_request_duration_seconds", f'{svc},endpoint="{e}"')
        out += [
            "# HELP edgeport_model_duration_seconds Time spent in the model (session.run or run()).",
            "# TYPE edgeport_model_duration_seconds histogram",
        ]
        out += self.model_time.render("edgeport_model_duration_seconds", svc)
        out += ["# HELP edgeport_batch_size Rows per model call.", "# TYPE edgeport_batch_size histogram"]
        out += self.batch_size.render("edgeport_batch_size", svc)
        if self.execution_providers:
            out += [
                "# HELP edgeport_execution_provider The ONNX session's execution providers (rank 0 runs first).",
                "# TYPE edgeport_execution_provider gauge",
            ]
            out += [
                f'edgeport_execution_provider{{{svc},provider="{p}",rank="{i}"}} 1'
                for i, p in enumerate(self.execution_providers)
            ]
        conns = self.connections
        if conns is not None:
            out += [
                "# HELP edgeport_http_connections Open HTTP connections.",
                "# TYPE edgeport_http_connections gauge",
                f"edgeport_http_connections{{{svc}}} {len(conns.open)}",
                "# HELP edgeport_http_connections_refused_total Connections refused at --max-connections.",
                "# TYPE edgeport_http_connections_refused_total counter",
                f"edgeport_http_connections_refused_total{{{svc}}} {conns.refused}",
                "# HELP edgeport_http_connections_timed_out_total Connections closed by --header-timeout "
                "or --idle-timeout.",
                "# TYPE edgeport_http_connections_timed_out_total counter",
                f"edgeport_http_connections_timed_out_total{{{svc}}} {conns.timed_out}",
            ]
        return ("\n".join(out) + "\n").encode()
