"""The Python SDK: `Workspace`, `Model`, `Webservice` with `InferenceConfig` and `DeploymentConfig`."""

from hub.sdk.model import Model
from hub.sdk.webservice import DeploymentConfig, InferenceConfig, Webservice
from hub.sdk.workspace import Workspace

__all__ = ["DeploymentConfig", "InferenceConfig", "Model", "Webservice", "Workspace"]
