"""The hub's Prometheus metrics, served at `GET /metrics` in the text exposition format.

What changes on a request path (REST latency, store commit time) is observed as it happens, into
histograms; what the hub already counts or holds (messages stored by group commit, DesiredStates
pushed, devices online) is read when Prometheus scrapes, so the agent channel's hot path pays
nothing for being watched.

Each hub has its own `CollectorRegistry` (not the process-global one), so tests and programs that
run several hubs in one process do not mix their figures.

prometheus_client (the Prometheus project's own client) writes the exposition format and its
histograms; the REST side's cost per request (a few µs) is small beside FastAPI's own. The scoring
runtime, whose requests take ~100 µs, keeps its hand-rolled metrics for that reason.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from hub.services import HubServices

TRANSPORTS = ("grpc", "mqtt")
ROLLOUT_STATES = ("running", "paused", "completed", "aborted")
# REST calls are ms (metadata) to minutes (a large blob upload).
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
# A group commit of 500 messages takes ~15 ms; one row a few hundred µs.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class HubMetrics:
    """The registry of one hub: request and commit histograms, plus a collector that reads its state at scrape."""

    def __init__(self, services: HubServices) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram(
            "edgeport_hub_http_request_duration_seconds",
            "REST and OCI requests to the hub, by method, route template and status code",
            ["method", "route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "edgeport_hub_store_write_duration_seconds",
            "SQLite write transactions of the hub, BEGIN to COMMIT (a group commit of agent messages is one)",
            buckets=COMMIT_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(HubStateCollector(services))
        services.db.on_commit = self.commit_seconds.observe

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one finished HTTP request."""
        self.request_seconds.labels(method, route, str(status)).observe(seconds)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)


class HubStateCollector(Collector):
    """Figures the hub already keeps, read at scrape time."""

    def __init__(self, services: HubServices) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        """Devices by presence and transport, agent messages and telemetry stored, pushes, rollouts."""
        services = self.services
        online = GaugeMetricFamily(
            "edgeport_hub_devices_online", "Devices with a live session, by transport", labels=["transport"]
        )
        devices = GaugeMetricFamily("edgeport_hub_devices", "Devices known to the hub, by state", labels=["state"])
        by_transport = dict.fromkeys(TRANSPORTS, 0)
        by_state = {"pending": 0, "enrolled": 0, "revoked": 0}
        for device in services.fleet.list():
            by_state[device["state"]] = by_state.get(device["state"], 0) + 1
            if device["online"] and device["transport"]:
                by_transport[device["transport"]] = by_transport.get(device["transport"], 0) + 1
        for transport, count in sorted(by_transport.items()):
            online.add_metric([transport], count)
        for state, count in sorted(by_state.items()):
            devices.add_metric([state], count)
        yield online
        yield devices

        ingest = services.control.ingest
        stats = dict(ingest.stats)
        yield CounterMetricFamily(
            "edgeport_hub_agent_messages_ingested",
            "Agent messages stored (status, heartbeat, telemetry batch...); rate() gives messages/s",
            value=stats.get("messages", 0),
        )
        yield CounterMetricFamily(
            "edgeport_hub_ingest_batches", "Group commits of agent messages", value=stats.get("batches", 0)
        )
        yield CounterMetricFamily(
            "edgeport_hub_ingest_failed_batches",
            "Group commits that failed (their messages are resent by the agents)",
            value=stats.get("failed_batches", 0),
        )
        yield GaugeMetricFamily(
            "edgeport_hub_ingest_backlog", "Agent messages queued and not yet stored", value=ingest.backlog()
        )
        yield CounterMetricFamily(
            "edgeport_hub_telemetry_points_ingested",
            "Telemetry points stored (inside the retention window)",
            value=services.telemetry.points_ingested,
        )
        yield CounterMetricFamily(
            "edgeport_hub_desired_state_pushes",
            "DesiredState messages handed to the gRPC and MQTT fronts for a device",
            value=services.control.desired_pushes,
        )
        # Rollouts (waves with health gates) have no state in the hub yet: the family is declared with
        # no series, so dashboards and alerts can be written against its name now.
        yield GaugeMetricFamily("edgeport_hub_rollouts", "Rollouts by state", labels=["state"])


def route_label(scope: Scope) -> str:
    """The route template that answered (`/api/v1/devices/{name}`), never the raw path: bounded cardinality."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    raw = str(scope.get("path", ""))
    if raw.startswith("/v2/"):  # OCI pulls answered before routing (the blob fast path)
        return "/v2/*"
    return "unmatched"


class RequestMetrics:
    """ASGI middleware timing each HTTP request into `HubMetrics.request_seconds` (pure ASGI: no body copying)."""

    def __init__(self, app: ASGIApp, metrics: HubMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; note the status when the response starts and the time when it ends."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app raises before answering

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            self.metrics.observe_request(
                str(scope.get("method", "")), route_label(scope), status, time.perf_counter() - started
            )
