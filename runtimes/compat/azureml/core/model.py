"""`azureml.core.model.Model.get_model_path` resolved under AZUREML_MODEL_DIR."""

from __future__ import annotations

import os
from pathlib import Path


class Model:
    """The one method entry scripts call on Model."""

    @staticmethod
    def get_model_path(model_name: str, version: int | str | None = None, _workspace: object = None) -> str:
        """Path of model `model_name` (latest `version` when None).

        One model deployed: AZUREML_MODEL_DIR is its folder (returned when the name matches the folder
        or a file in it). Several: `AZUREML_MODEL_DIR/<name>/<version>/`.
        """
        root = Path(os.environ.get("AZUREML_MODEL_DIR", "."))
        named = root / model_name
        if named.is_dir():
            versions = sorted(
                (p for p in named.iterdir() if p.is_dir()),
                key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name),
            )
            if version is not None:
                chosen = named / str(version)
                if not chosen.is_dir():
                    raise FileNotFoundError(f"model {model_name} version {version} not found under {named}")
                return str(chosen)
            if versions and all(v.name.isdigit() for v in versions):
                return str(versions[-1])
            return str(named)
        if named.exists():
            return str(named)
        if root.is_dir():
            return str(root)
        raise FileNotFoundError(f"model {model_name} not found under AZUREML_MODEL_DIR={root}")
