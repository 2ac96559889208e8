"""Wire the control plane (fleet, deployments, telemetry, the agent-channel core) into `HubServices`.

Called once from `HubServices.open`; `hub serve` later sets the addresses it advertises
(`fleet.grpc_address`, `deployments.registry_url`) and starts the fronts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hub.control.core import ControlCore
from hub.deployments import DeploymentService, ResolvedModel
from hub.errors import Conflict
from hub.fleet import FleetService
from hub.pki import CertificateAuthority
from hub.store.deployments import DeploymentStore
from hub.store.fleet import FleetStore
from hub.store.telemetry import TelemetryStore
from hub.telemetry import TelemetryService

if TYPE_CHECKING:
    from hub.services import HubServices


def attach_control_plane(services: HubServices) -> None:
    """Build fleet, deployments, telemetry and the control core on `services` and hook them to the registry."""
    ca = CertificateAuthority(services.data_dir / "pki")
    fleet = FleetService(FleetStore(services.db), ca)
    registry = services.registry

    def resolve(name: str, version: int | None) -> ResolvedModel:
        v = registry.get_version(name, version)
        files = [{"path": f.path, "digest": f.digest, "size": f.size} for f in v.files]
        return ResolvedModel(name=v.name, version=v.version, files=files, manifest_digest=v.manifest_digest)

    deployments = DeploymentService(
        DeploymentStore(services.db), fleet, resolve, services.blobs.exists, registry_url="http://127.0.0.1:7070"
    )
    telemetry = TelemetryService(TelemetryStore(services.db))

    def refuse_in_use(name: str, version: int) -> None:
        users = deployments.services_using(name, version)
        if users:
            raise Conflict(f"model {name}:{version} is used by service {', '.join(users)}; delete or update it first")

    registry.in_use_checks.append(refuse_in_use)
    services.artifacts.repository_resolvers.append(deployments.knows_source_repository)
    services.fleet = fleet
    services.deployments = deployments
    services.telemetry = telemetry
    services.control = ControlCore(fleet, deployments, telemetry, services.db)
