"""`Model`: a registered model version, with the seed SDK's shape (register, download, delete)."""

from __future__ import annotations

import builtins  # below `def list`, a bare `list[...]` annotation in the class names that method
from pathlib import Path
from typing import Any

from hub.sdk.webservice import DeploymentConfig, InferenceConfig, Webservice
from hub.sdk.workspace import Workspace


class Model:
    """One version of a registered model.

    `Model(ws, name)` is the latest version; `Model(ws, name, version=2)` a given one.
    """

    def __init__(self, workspace: Workspace, name: str, version: int | None = None) -> None:
        self.workspace = workspace
        self._data: dict[str, Any] = workspace.client.get_model(name, version)

    @classmethod
    def register(
        cls,
        workspace: Workspace,
        model_path: str | Path,
        model_name: str,
        tags: dict[str, str] | None = None,
        properties: dict[str, str] | None = None,
        description: str | None = None,
        model_framework: str | None = None,
    ) -> Model:
        """Upload a file or folder and register it as the next version of `model_name`."""
        data = workspace.client.register_model(
            model_name,
            Path(model_path),
            tags=tags,
            properties=properties,
            description=description or "",
            framework=model_framework or "",
        )
        return cls._from_data(workspace, data)

    @classmethod
    def list(cls, workspace: Workspace, name: str | None = None, tags: list[str] | None = None) -> list[Model]:
        """Registered versions (newest first per name), optionally filtered by name and tags (KEY or KEY=VALUE)."""
        return [cls._from_data(workspace, d) for d in workspace.client.list_models(name, tags)]

    @classmethod
    def _from_data(cls, workspace: Workspace, data: dict[str, Any]) -> Model:
        model = cls.__new__(cls)
        model.workspace = workspace
        model._data = data
        return model

    # --- the seed's attributes -------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The model's name."""
        return self._data["name"]

    @property
    def version(self) -> int:
        """This version's number."""
        return self._data["version"]

    @property
    def id(self) -> str:
        """`NAME:VERSION`."""
        return self._data["id"]

    @property
    def tags(self) -> dict[str, str]:
        """Tags given at register."""
        return dict(self._data["tags"])

    @property
    def properties(self) -> dict[str, str]:
        """Properties given at register."""
        return dict(self._data["properties"])

    @property
    def description(self) -> str:
        """Free-text description."""
        return self._data["description"]

    @property
    def framework(self) -> str:
        """Model framework given at register (may be empty)."""
        return self._data["framework"]

    @property
    def files(self) -> builtins.list[dict[str, Any]]:
        """The version's files: path, digest, size."""
        return [dict(f) for f in self._data["files"]]

    @property
    def created_time(self) -> str:
        """When it was registered (ISO 8601, UTC)."""
        return self._data["created_at"]

    def download(self, target_dir: str | Path = ".", exist_ok: bool = False) -> str:
        """Download the files into `target_dir` (kept structure, verified); return the folder path."""
        self.workspace.client.download_model(self.name, self.version, Path(target_dir), overwrite=exist_ok)
        return str(target_dir)

    def delete(self) -> None:
        """Delete this version from the registry (refused while a service uses it)."""
        self.workspace.client.delete_model(self.name, self.version)

    def serialize(self) -> dict[str, Any]:
        """The hub's JSON for this version."""
        return dict(self._data)

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, version={self.version})"

    # --- deployment -------------------------------------------------------------------------------
    @staticmethod
    def deploy(
        workspace: Workspace,
        name: str,
        models: builtins.list[Model | str],
        inference_config: InferenceConfig | None = None,
        deployment_config: DeploymentConfig | None = None,
        target: str | None = None,
        overwrite: bool = False,
    ) -> Webservice:
        """Deploy `models` as service `name` to the devices `target` selects; see `Webservice.deploy`."""
        return Webservice.deploy(workspace, name, models, inference_config, deployment_config, target, overwrite)
