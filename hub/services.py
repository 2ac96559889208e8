"""`HubServices`: every service of one hub, built in order from one data dir.

This is the hub's composition root for state: the database, the blob store, the registry,
artifacts, fleet, deployments, telemetry and the agent-channel core are each constructed here
and handed the others they need, so every front (REST API, gRPC, MQTT) receives one fully
built object. `hub.server.build_hub` adds the network components on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hub.access import AccessService
from hub.artifacts import ArtifactService
from hub.blob_gc import BlobCollector
from hub.blobs import BlobStore
from hub.control.core import ControlCore
from hub.deployments import DeploymentService, ResolvedModel
from hub.errors import Conflict
from hub.fleet import FleetService
from hub.pki import CertificateAuthority
from hub.registry import RegistryService
from hub.serve_config import DEFAULT_PORT, AgentChannelConfig, BlobGcConfig
from hub.store import Database, open_database
from hub.store.access import AccessStore
from hub.store.deployments import DeploymentStore
from hub.store.fleet import FleetStore
from hub.store.telemetry import TelemetryStore
from hub.telemetry import TelemetryService


@dataclass
class HubServices:
    """The hub's state and services for one data dir."""

    data_dir: Path
    db: Database
    blobs: BlobStore
    registry: RegistryService
    artifacts: ArtifactService
    fleet: FleetService
    deployments: DeploymentService
    telemetry: TelemetryService
    control: ControlCore
    blob_collector: BlobCollector
    access: AccessService

    @classmethod
    def open(
        cls, data_dir: Path, agents: AgentChannelConfig | None = None, blob_gc: BlobGcConfig | None = None
    ) -> HubServices:
        """Open (and lock) the data dir and build every service; DataDirLocked if another hub holds it.

        `agents`: the pace agents are asked to keep and how long telemetry is kept; `blob_gc`: when
        unreferenced blobs are collected (defaults otherwise).
        """
        agents = agents or AgentChannelConfig()
        blob_gc = blob_gc or BlobGcConfig()
        data_dir = Path(data_dir)
        db = open_database(data_dir)
        try:
            return cls._build(data_dir, db, agents, blob_gc)
        except BaseException:
            db.close()
            raise

    @classmethod
    def _build(
        cls, data_dir: Path, db: Database, agents: AgentChannelConfig, blob_gc: BlobGcConfig
    ) -> HubServices:
        blobs = BlobStore(data_dir)
        registry = RegistryService(db, blobs)
        artifacts = ArtifactService(blobs, registry)
        fleet = FleetService(FleetStore(db), CertificateAuthority(data_dir / "pki"))

        def resolve(name: str, version: int | None) -> ResolvedModel:
            v = registry.get_version(name, version)
            files = [{"path": f.path, "digest": f.digest, "size": f.size} for f in v.files]
            return ResolvedModel(name=v.name, version=v.version, files=files, manifest_digest=v.manifest_digest)

        # The OCI base in manifests until `hub serve` has bound its port and knows the real one.
        deployments = DeploymentService(
            DeploymentStore(db), fleet, resolve, blobs.exists, registry_url=f"http://127.0.0.1:{DEFAULT_PORT}"
        )
        telemetry = TelemetryService(TelemetryStore(db), retention_s=agents.telemetry_retention_s)
        control = ControlCore(
            fleet,
            deployments,
            telemetry,
            db,
            heartbeat_interval_s=agents.heartbeat_interval_s,
            telemetry_interval_s=agents.telemetry_interval_s,
            reconnects_per_s=agents.reconnects_per_s,
        )

        def refuse_in_use(name: str, version: int) -> None:
            users = deployments.services_using(name, version)
            if users:
                raise Conflict(
                    f"model {name}:{version} is used by service {', '.join(users)}; delete or update it first"
                )

        # How the services call each other back: a model in use cannot be deleted, a service's source
        # bundle is served over OCI, a newly enrolled device gets its desired state, and the fronts hear
        # of every device whose desired state or standing changed.
        registry.in_use_checks.append(refuse_in_use)
        artifacts.repository_resolvers.append(deployments.knows_source_repository)
        fleet.on_enrolled.append(lambda device_id: deployments.refresh([device_id]))
        deployments.on_devices_changed = control.notify_many
        fleet.on_device_changed = control.notify

        def device_cert_serial(device_id: str) -> str | None:
            standing = fleet.standing(device_id)
            return standing["cert_serial"] if standing is not None and standing["state"] == "enrolled" else None

        return cls(
            data_dir=data_dir,
            db=db,
            blobs=blobs,
            registry=registry,
            artifacts=artifacts,
            fleet=fleet,
            deployments=deployments,
            telemetry=telemetry,
            control=control,
            blob_collector=BlobCollector(db, blobs, grace_s=blob_gc.grace_s, interval_s=blob_gc.interval_s),
            access=AccessService(AccessStore(db), data_dir, device_cert_serial),
        )

    def close(self) -> None:
        """Store what agents already sent, then release the database and the data-dir lock."""
        self.control.close()
        self.db.close()
