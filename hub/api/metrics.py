"""`GET /metrics`: the hub's Prometheus metrics; `install_metrics` adds the request-timing middleware."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from hub.metrics import HubMetrics, RequestMetrics
from hub.services import HubServices

router = APIRouter(tags=["metrics"])


@router.get("/metrics", summary="Prometheus metrics of the hub (text exposition format)", response_class=Response)
def metrics(request: Request) -> Response:
    """Devices online by transport, agent messages ingested, pushes, REST latency, store write latency."""
    hub_metrics: HubMetrics = request.app.state.metrics
    return Response(hub_metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI, services: HubServices) -> None:
    """Create the hub's metrics and time every request (outermost middleware: it sees every answer)."""
    app.state.metrics = HubMetrics(services)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
