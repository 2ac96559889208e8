"""The Python SDK: `Workspace`, `Model` (room 4 adds `Webservice`)."""

from hub.sdk.model import Model
from hub.sdk.workspace import Workspace

__all__ = ["Model", "Workspace"]
