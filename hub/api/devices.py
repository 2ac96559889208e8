"""Device routes: enrollment tokens, list/show with inventory and telemetry, revoke; telemetry queries."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from hub.api.deps import Services
from hub.fleet import DEFAULT_TOKEN_TTL_S
from hub.names import parse_duration, validate_fleet_name
from hub.services import HubServices
from hub.telemetry import MAX_LIMIT

router = APIRouter(prefix="/api/v1", tags=["devices"])

DeviceName = Annotated[str, Path(description="the device's name: 1-63 of A-Z a-z 0-9 . _ -")]
MAX_SINCE_S = 10 * 365 * 86400  # far past any retention; keeps `now - since` a finite, storable time


class EnrollTokenRequest(BaseModel):
    """Body of `POST /api/v1/devices`: register a device and get its one-time enrollment token."""

    model_config = ConfigDict(extra="forbid")
    name: str  # checked by the fleet, with a message naming the rule
    labels: dict[str, str] | list[str] = Field(
        default_factory=dict, max_length=100, description="{k: v} or ['k=v', ...]"
    )
    expires: str = Field(
        default=f"{DEFAULT_TOKEN_TTL_S // 3600}h", max_length=32, description="token lifetime, e.g. 30m, 1h, 2d"
    )
    replace: bool = Field(default=False, description="enroll the name of a revoked device again")


def _detail(services: HubServices, device: dict[str, Any]) -> dict[str, Any]:
    name = device["name"]
    running = services.deployments.device_services(name)
    on_device = {s["service"] for s in running}
    # Latest figures of the device and of the services it runs now (not of services deleted since).
    summary = {
        k: v for k, v in services.telemetry.summary(name).items() if k.split("/", 1)[0] in on_device or "/" not in k
    }
    return {**device, "services": running, "telemetry": summary}


@router.post("/devices", status_code=201, summary="Register a device and issue a one-time enrollment token")
def create_device(body: EnrollTokenRequest, services: Services) -> dict[str, str]:
    """`{"device", "token", "expires"}`; the token is shown once."""
    return services.fleet.create_token(body.name, body.labels, parse_duration(body.expires), replace=body.replace)


@router.get("/devices", summary="Devices with inventory, last heartbeat, services and telemetry summary")
def list_devices(services: Services) -> list[dict[str, Any]]:
    """Every device, by name."""
    return [_detail(services, d) for d in services.fleet.list()]


@router.get("/devices/{name}", summary="One device")
def show_device(name: DeviceName, services: Services) -> dict[str, Any]:
    """Inventory, presence, services and the latest telemetry of one device."""
    return _detail(services, services.fleet.show(validate_fleet_name("device", name)))


@router.post("/devices/{name}/revoke", summary="Revoke a device: its certificate is refused from now on")
def revoke_device(name: DeviceName, services: Services) -> dict[str, Any]:
    """Revoke and close the device's live sessions."""
    return services.fleet.revoke(validate_fleet_name("device", name))


@router.get("/telemetry", summary="Telemetry points, newest first (kept for the retention period)")
def query_telemetry(
    services: Services,
    device: Annotated[str | None, Query(max_length=255)] = None,
    service: Annotated[str | None, Query(max_length=255)] = None,
    metric: Annotated[str | None, Query(max_length=255)] = None,
    since: Annotated[float | None, Query(gt=0, le=MAX_SINCE_S, description="seconds back from now")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many points")] = 1000,
) -> list[dict[str, Any]]:
    """Filter by device, service, metric and age."""
    return services.telemetry.query(device=device, service=service, metric=metric, since_s=since, limit=limit)
