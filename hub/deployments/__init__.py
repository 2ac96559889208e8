"""Deployments: desired state per service, generations that only grow, per-device DesiredState.

`DeploymentService` (service.py) is what the API and the control core call; the request
checks, manifest building, per-device desired state, device reports and user views each
live in a module of their own.
"""

from hub.deployments.manifest import ModelResolver, ResolvedModel
from hub.deployments.service import DeploymentService

__all__ = ["DeploymentService", "ModelResolver", "ResolvedModel"]
