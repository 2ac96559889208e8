"""Aggregated telemetry: a metric in time buckets (min/avg/max) for one device or across a service's devices.

What `hub device|service telemetry --every` and the dashboard's charts read.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from hub.api.deps import Services
from hub.names import validate_fleet_name

router = APIRouter(prefix="/api/v1", tags=["telemetry"])

MAX_WINDOW_S = 366 * 86400  # past any retention; keeps `now - since` a finite, storable time
Metric = Annotated[
    str,
    Query(min_length=1, max_length=255, description="a metric name (runtime.latency_p99_ms) or its end (p99_ms)"),
]
Since = Annotated[float, Query(gt=0, le=MAX_WINDOW_S, description="window: seconds back from now")]
Every = Annotated[float, Query(ge=0.001, le=MAX_WINDOW_S, description="bucket width in seconds")]


@router.get(
    "/devices/{name}/telemetry/aggregate",
    summary="One device's metric in time buckets: min/avg/max per bucket (rates for *_total counters)",
)
def device_aggregate(
    name: Annotated[str, Path(description="the device's name")],
    services: Services,
    metric: Metric,
    since: Since = 3600,
    every: Every = 60,
    service: Annotated[str | None, Query(max_length=255, description="only this service's figures")] = None,
) -> dict[str, Any]:
    """`{"metric", "kind", "buckets": [{"at_ms", "min", "avg", "max", "count"}...]}`, oldest bucket first."""
    device = services.fleet.show(validate_fleet_name("device", name))["name"]  # NotFound before an empty chart
    result = services.telemetry.aggregate(
        devices=[device], metric=metric, since_s=since, every_s=every, service=service
    )
    return {"device": device, **result}


@router.get(
    "/services/{name}/telemetry/aggregate",
    summary="A service's metric across the devices it targets: min/avg/max per bucket (and sum for counters)",
)
def service_aggregate(
    name: Annotated[str, Path(description="the service's name")],
    services: Services,
    metric: Metric,
    since: Since = 3600,
    every: Every = 60,
) -> dict[str, Any]:
    """The service's own figures on every device its target selects now."""
    view = services.deployments.show(validate_fleet_name("service", name))
    devices = [d["device"] for d in view["devices"]]
    return services.telemetry.aggregate(devices=devices, metric=metric, since_s=since, every_s=every, service=name)
