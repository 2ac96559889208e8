"""Edgeport hub: the server, its CLI, and the Python SDK.

from hub import Workspace, Model
ws = Workspace("http://127.0.0.1:7070")       # or Workspace.from_config()
model = Model.register(ws, model_path="model.onnx", model_name="digits", tags={"team": "vision"})
Model(ws, "digits").download("./digits")
"""

from hub.errors import BadInput, Conflict, HubError, InsufficientStorage, NotFound, StorageError
from hub.sdk import DeploymentConfig, InferenceConfig, Model, Webservice, Workspace

__all__ = [
    "BadInput",
    "Conflict",
    "DeploymentConfig",
    "HubError",
    "InferenceConfig",
    "InsufficientStorage",
    "Model",
    "NotFound",
    "StorageError",
    "Webservice",
    "Workspace",
]
