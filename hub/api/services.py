"""Service (deployment) routes: deploy, list, show, update, delete, keys, scoring tokens, logs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from hub.api.deps import Services
from hub.errors import NotFound
from hub.names import validate_fleet_name

router = APIRouter(prefix="/api/v1/services", tags=["services"])

ServiceName = Annotated[str, Path(description="the service's name: 1-63 of A-Z a-z 0-9 . _ -")]
MAX_INT64 = 2**63 - 1


def _service(name: str) -> str:
    return validate_fleet_name("service", name)


class SourceFile(BaseModel):
    """One file of the entry script's folder, already uploaded as a blob."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(max_length=4096)
    digest: str = Field(max_length=71)
    size: int = Field(ge=0, le=MAX_INT64)


class Inference(BaseModel):
    """The resolved inference config: entry script, its uploaded folder, pip requirements."""

    model_config = ConfigDict(extra="forbid")
    entry_script: str = Field(max_length=4096)
    source_files: list[SourceFile] = Field(max_length=100_000)
    requirements: list[str] = Field(default_factory=list, max_length=10_000)
    environment_variables: dict[str, str] = Field(default_factory=dict, max_length=10_000)
    description: str = Field(default="", max_length=64 * 1024)


class DeployRequest(BaseModel):
    """Body of `POST /api/v1/services`."""

    model_config = ConfigDict(extra="forbid")
    name: str  # checked by the deployments, with a message naming the rule
    models: list[str] = Field(max_length=1000, description="NAME:VERSION (or NAME for the latest)")
    target: str = Field(max_length=4096, description="a device name or label=value[,label=value]")
    inference: Inference | None = Field(default=None, description="absent: a no-code ONNX deployment")
    deployment: dict[str, Any] = Field(default_factory=dict, description="the deployment config JSON")
    overwrite: bool = False


class UpdateRequest(BaseModel):
    """Body of `PATCH /api/v1/services/{name}`: what is given replaces the current value."""

    model_config = ConfigDict(extra="forbid")
    models: list[str] | None = Field(default=None, max_length=1000)
    target: str | None = Field(default=None, max_length=4096)
    inference: Inference | None = None
    deployment: dict[str, Any] | None = None


class RegenerateRequest(BaseModel):
    """Body of `POST /api/v1/services/{name}/keys/regenerate`."""

    model_config = ConfigDict(extra="forbid")
    key: str = Field(max_length=16, description="primary | secondary")


@router.post("", status_code=201, summary="Deploy a service: desired state at a new generation")
def deploy(body: DeployRequest, services: Services) -> dict[str, Any]:
    """Record the service; agents converge to it. Poll `GET /api/v1/services/{name}` for progress."""
    request = body.model_dump(exclude={"overwrite"}, exclude_none=True)
    return services.deployments.create(request, overwrite=body.overwrite)


@router.get("", summary="Services with per-device phases")
def list_services(services: Services) -> list[dict[str, Any]]:
    """Every service."""
    return services.deployments.list()


@router.get("/{name}", summary="One service: state, generation, per-device phase and scoring URIs")
def show_service(name: ServiceName, services: Services) -> dict[str, Any]:
    """`{"name", "state", "generation", "devices": [{"device", "phase", "scoring_uri", ...}]}`."""
    return services.deployments.show(_service(name))


@router.patch("/{name}", summary="Roll a service to a new generation (old keeps serving until new is healthy)")
def update_service(name: ServiceName, body: UpdateRequest, services: Services) -> dict[str, Any]:
    """Fields given replace the current ones."""
    return services.deployments.update(_service(name), body.model_dump(exclude_none=True))


@router.delete("/{name}", summary="Delete a service; agents stop and clean it up")
def delete_service(name: ServiceName, services: Services) -> dict[str, Any]:
    """Take the service out of desired state."""
    return services.deployments.delete(_service(name))


@router.get("/{name}/keys", summary="Primary and secondary keys of a service with key auth")
def service_keys(name: ServiceName, services: Services) -> dict[str, str]:
    """`{"primaryKey", "secondaryKey"}`."""
    return services.deployments.keys(_service(name))


@router.post("/{name}/keys/regenerate", summary="Replace the primary or secondary key")
def regenerate_key(name: ServiceName, body: RegenerateRequest, services: Services) -> dict[str, str]:
    """The new keys; devices get them with a new generation."""
    return services.deployments.regenerate_key(_service(name), body.key.lower())


class TokenRequest(BaseModel):
    """Body of `POST /api/v1/services/{name}/token`."""

    model_config = ConfigDict(extra="forbid")
    ttl_seconds: int = Field(default=3600, ge=60, le=86400, description="how long the token is valid")


@router.post("/{name}/token", summary="A scoring token for a service with token auth (tokenAuthEnabled)")
def service_token(name: ServiceName, services: Services, body: TokenRequest | None = None) -> dict[str, Any]:
    """`{"accessToken", "tokenType": "Bearer", "expiryOn", "refreshAfter"}` (unix seconds): send it as
    'Authorization: Bearer TOKEN' to the service's scoring URI until expiryOn."""
    ttl = (body or TokenRequest()).ttl_seconds
    return services.deployments.token(_service(name), float(ttl))


@router.get("/{name}/logs", summary="The runtime's last log lines from each device")
def service_logs(
    name: ServiceName,
    services: Services,
    device: Annotated[str | None, Query(max_length=63)] = None,
    lines: Annotated[int, Query(ge=1, le=5000)] = 100,
) -> list[dict[str, Any]]:
    """Live from connected devices (asked over their link); else the log tail of the last failure."""
    view = services.deployments.show(_service(name))
    wanted = [d for d in view["devices"] if device is None or d["device"] == device]
    if device is not None and not wanted:
        raise NotFound(f"service {name} does not run on device {device}")
    # Ask every device at once: each answer (or its timeout) should not wait for the others.
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(wanted)))) as pool:
        answers = list(pool.map(lambda d: services.control.request_logs(d["device"], name, lines), wanted))
    return [
        {
            "device": d["device"],
            "source": "live" if live is not None else "last status",
            "lines": live if live is not None else d["log_tail"],
        }
        for d, live in zip(wanted, answers, strict=True)
    ]
