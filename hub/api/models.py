"""Model registry routes: register, list, show, delete versions (`/api/v1/models`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from hub.api.deps import Services
from hub.names import parse_label, validate_name
from hub.registry import MAX_FILES, ModelFile

router = APIRouter(prefix="/api/v1/models", tags=["models"])

MAX_INT64 = 2**63 - 1  # SQLite's INTEGER: version numbers and sizes past it cannot be stored or looked up
ModelName = Annotated[str, Path(description="the model's name: 1-255 of A-Z a-z 0-9 . _ -")]
VersionNumber = Annotated[int, Path(ge=1, le=MAX_INT64, description="a version number (1, 2, ...)")]


class FileEntry(BaseModel):
    """One file of the version: its relative path and an already uploaded blob."""

    path: str = Field(max_length=4096, description="path relative to the model folder, '/'-separated")
    digest: str = Field(max_length=71, description="sha256:<hex> of an uploaded blob")
    size: int = Field(ge=0, le=MAX_INT64)


class RegisterRequest(BaseModel):
    """Body of `POST /api/v1/models`: creates the next version of `name`."""

    name: str  # checked by the registry, with a message naming the rule
    files: list[FileEntry] = Field(max_length=MAX_FILES)
    tags: dict[str, str] = Field(default_factory=dict, max_length=1000)
    properties: dict[str, str] = Field(default_factory=dict, max_length=1000)
    description: str = Field(default="", max_length=64 * 1024)
    framework: str = Field(default="", max_length=255)


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
    name: Annotated[str | None, Query(max_length=255)] = None,
    tag: Annotated[
        list[str] | None, Query(max_length=100, description="KEY=VALUE or KEY (any value); repeat for several")
    ] = None,
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
def show_latest(name: ModelName, services: Services) -> dict[str, Any]:
    """The latest version; 404 when the model has none."""
    return services.registry.get_version(validate_name(name)).to_json()


@router.get("/{name}/versions/{version}", summary="One version of a model")
def show_version(name: ModelName, version: VersionNumber, services: Services) -> dict[str, Any]:
    """That version; 404 when absent."""
    return services.registry.get_version(validate_name(name), version).to_json()


@router.delete("/{name}/versions/{version}", summary="Delete one version (refused while a service uses it)")
def delete_version(name: ModelName, version: VersionNumber, services: Services) -> dict[str, Any]:
    """Delete; 409 when in use. Blobs no other version or service uses are collected after the grace period."""
    return services.registry.delete_version(validate_name(name), version).to_json()
