"""Model registry routes: register, list, show, delete versions (`/api/v1/models`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from hub.api.deps import Services
from hub.names import parse_label
from hub.registry import ModelFile

router = APIRouter(prefix="/api/v1/models", tags=["models"])


class FileEntry(BaseModel):
    """One file of the version: its relative path and an already uploaded blob."""

    path: str = Field(description="path relative to the model folder, '/'-separated")
    digest: str = Field(description="sha256:<hex> of an uploaded blob")
    size: int = Field(ge=0)


class RegisterRequest(BaseModel):
    """Body of `POST /api/v1/models`: creates the next version of `name`."""

    name: str
    files: list[FileEntry]
    tags: dict[str, str] = Field(default_factory=dict)
    properties: dict[str, str] = Field(default_factory=dict)
    description: str = ""
    framework: str = ""


@router.post("", status_code=201, summary="Register the next version of a model (all files uploaded first)")
def register_model(body: RegisterRequest, services: Services) -> dict[str, Any]:
    """Create version N+1 of `name` in one transaction, only if every blob is stored."""
    version = services.registry.register(
        body.name,
        [ModelFile(f.path, f.digest, f.size) for f in body.files],
        tags=body.tags,
        properties=body.properties,
        description=body.description,
        framework=body.framework,
    )
    return version.to_json()


@router.get("", summary="List model versions (filter by name and tags)")
def list_models(
    services: Services,
    name: str | None = None,
    tag: Annotated[list[str] | None, Query(description="KEY=VALUE or KEY (any value); repeat for several")] = None,
    latest: Annotated[bool, Query(description="only the latest version of each model")] = False,
) -> list[dict[str, Any]]:
    """Versions newest first per name."""
    tags: dict[str, str | None] = {}
    for t in tag or []:
        if "=" in t:
            key, value = parse_label(t)
            tags[key] = value
        else:
            tags[t] = None
    return [v.to_json() for v in services.registry.list_versions(name, tags, latest_only=latest)]


@router.get("/{name}", summary="The latest version of a model")
def show_latest(name: str, services: Services) -> dict[str, Any]:
    """The latest version; 404 when the model has none."""
    return services.registry.get_version(name).to_json()


@router.get("/{name}/versions/{version}", summary="One version of a model")
def show_version(name: str, version: int, services: Services) -> dict[str, Any]:
    """That version; 404 when absent."""
    return services.registry.get_version(name, version).to_json()


@router.delete("/{name}/versions/{version}", summary="Delete one version (refused while a service uses it)")
def delete_version(name: str, version: int, services: Services) -> dict[str, Any]:
    """Delete; 409 when in use. Blobs no other version or service uses are collected after the grace period."""
    return services.registry.delete_version(name, version).to_json()
