"""`HubServices`: the one core every front (REST API, gRPC, MQTT, CLI-in-process) calls.

It holds the database, the blob store and each room's service. Rooms add their
service as a field with a default of None and build it in `HubServices.open`
(marked below), so fronts receive everything through this one object.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.artifacts import ArtifactService
from hub.blobs import BlobStore
from hub.control.plane import attach_control_plane
from hub.registry import RegistryService
from hub.store import Database


@dataclass
class HubServices:
    """The hub's state and services for one data dir."""

    data_dir: Path
    db: Database
    blobs: BlobStore
    registry: RegistryService
    artifacts: ArtifactService
    # --- other rooms' services (room 4: fleet, deployments, telemetry, control) ---
    fleet: Any = None
    deployments: Any = None
    telemetry: Any = None
    control: Any = None

    @classmethod
    def open(cls, data_dir: Path) -> HubServices:
        """Open (and lock) the data dir and build every service; DataDirLocked if another hub holds it."""
        data_dir = Path(data_dir)
        db = Database(data_dir)
        try:
            blobs = BlobStore(data_dir)
            registry = RegistryService(db, blobs)
            services = cls(
                data_dir=data_dir,
                db=db,
                blobs=blobs,
                registry=registry,
                artifacts=ArtifactService(blobs, registry),
            )
            # --- rooms build and wire their services here (e.g. registry.in_use_checks.append(...)) ---
            attach_control_plane(services)  # fleet, deployments, telemetry, agent-channel core
        except BaseException:
            db.close()
            raise
        return services

    def close(self) -> None:
        """Store what agents already sent, then release the database and the data-dir lock."""
        if self.control is not None:
            self.control.close()
        self.db.close()
