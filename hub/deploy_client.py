"""`DeployClient`: the control-plane calls the CLI and the SDK share (devices, services, telemetry), over HubClient.

It also turns an inference config into what the hub stores (the entry script's folder
uploaded as blobs) and waits for a service generation to settle, reporting each
device's phase changes as they happen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hub.client import HubClient, collect_files
from hub.deployconfig import InferenceConfig
from hub.errors import HubError

# Called with (device, phase, message) whenever a device's phase for the awaited generation changes.
PhaseChange = Callable[[str, str, str], None]
SETTLED_OK = "Healthy"
SETTLED_BAD = ("Failed", "RolledBack")
MAX_SOURCE_FILES = 1000


class DeploymentFailed(HubError):
    """A device reported Failed or RolledBack for the awaited generation (`view`: the service then)."""

    def __init__(self, message: str, view: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.view = view or {}


class DeploymentTimeout(HubError):
    """The service did not settle within the wait time."""


class DeployClient:
    """Devices, services and telemetry through one hub's REST API."""

    def __init__(self, hub: HubClient) -> None:
        self.hub = hub

    # ---- devices ----

    def enroll_device(self, name: str, labels: list[str], expires: str = "1h") -> dict[str, str]:
        """Register a device; `{"device", "token", "expires"}`."""
        body = {"name": name, "labels": labels, "expires": expires}
        return self.hub.request("POST", "/api/v1/devices", json=body).json()

    def list_devices(self) -> list[dict[str, Any]]:
        """Every device with inventory, services and telemetry summary."""
        return self.hub.request("GET", "/api/v1/devices").json()

    def get_device(self, name: str) -> dict[str, Any]:
        """One device."""
        return self.hub.request("GET", f"/api/v1/devices/{name}").json()

    def revoke_device(self, name: str) -> dict[str, Any]:
        """Revoke a device."""
        return self.hub.request("POST", f"/api/v1/devices/{name}/revoke").json()

    def telemetry(self, **filters: Any) -> list[dict[str, Any]]:
        """Telemetry points (device, service, metric, since, limit)."""
        params = {k: v for k, v in filters.items() if v is not None}
        return self.hub.request("GET", "/api/v1/telemetry", params=params).json()

    # ---- services ----

    def upload_inference(self, ic: InferenceConfig) -> dict[str, Any]:
        """Upload the entry script's folder (skipping stored blobs); the `inference` part of a deploy request."""
        assert ic.source_directory is not None and ic.entry_script is not None
        files = collect_files(ic.source_directory)
        files = [f for f in files if "__pycache__" not in f.path.split("/")]
        if len(files) > MAX_SOURCE_FILES:
            raise HubError(f"source directory {ic.source_directory} has {len(files)} files; the limit is "
                           f"{MAX_SOURCE_FILES} (point sourceDirectory at the scoring code only)")
        for f in files:
            self.hub.upload_blob(f.source, f.digest, f.size)
        return {
            "entry_script": ic.entry_script,
            "source_files": [{"path": f.path, "digest": f.digest, "size": f.size} for f in files],
            "requirements": ic.requirements,
            "environment_variables": ic.environment_variables,
            "description": ic.description,
        }

    def deploy(
        self,
        name: str,
        models: list[str],
        target: str,
        *,
        inference: dict[str, Any] | None,
        deployment: dict[str, Any],
        overwrite: bool = False,
    ) -> dict[str, Any]:
        """Create the service (its desired state); returns the service view."""
        body: dict[str, Any] = {"name": name, "models": models, "target": target, "deployment": deployment,
                                "overwrite": overwrite}
        if inference is not None:
            body["inference"] = inference
        return self.hub.request("POST", "/api/v1/services", json=body).json()

    def update(self, name: str, **changes: Any) -> dict[str, Any]:
        """Roll the service to a new generation with `changes` (models, target, inference, deployment)."""
        body = {k: v for k, v in changes.items() if v is not None}
        return self.hub.request("PATCH", f"/api/v1/services/{name}", json=body).json()

    def get_service(self, name: str) -> dict[str, Any]:
        """The service view."""
        return self.hub.request("GET", f"/api/v1/services/{name}").json()

    def list_services(self) -> list[dict[str, Any]]:
        """Every service."""
        return self.hub.request("GET", "/api/v1/services").json()

    def delete_service(self, name: str) -> dict[str, Any]:
        """Delete a service."""
        return self.hub.request("DELETE", f"/api/v1/services/{name}").json()

    def keys(self, name: str) -> dict[str, str]:
        """`{"primaryKey", "secondaryKey"}`."""
        return self.hub.request("GET", f"/api/v1/services/{name}/keys").json()

    def regenerate_key(self, name: str, key: str) -> dict[str, str]:
        """New primary or secondary key."""
        return self.hub.request("POST", f"/api/v1/services/{name}/keys/regenerate", json={"key": key}).json()

    def logs(self, name: str, device: str | None = None, lines: int = 100) -> list[dict[str, Any]]:
        """`[{"device", "source", "lines"}]`."""
        params: dict[str, Any] = {"lines": lines}
        if device:
            params["device"] = device
        return self.hub.request("GET", f"/api/v1/services/{name}/logs", params=params).json()

    def wait(
        self,
        name: str,
        generation: int,
        *,
        timeout: float = 600.0,
        interval: float = 0.25,
        on_change: PhaseChange | None = None,
    ) -> dict[str, Any]:
        """Poll until every targeted device is Healthy at `generation`; raise DeploymentFailed/DeploymentTimeout."""
        deadline = time.monotonic() + timeout
        seen: dict[str, tuple[str, str]] = {}
        while True:
            view = self.get_service(name)
            if view["generation"] != generation:
                raise DeploymentFailed(f"service {name} moved on to generation {view['generation']} meanwhile")
            for d in view["devices"]:
                now = (d["phase"], d["message"])
                if seen.get(d["device"]) != now:
                    seen[d["device"]] = now
                    if on_change:
                        on_change(d["device"], d["phase"], d["message"])
            bad = [d for d in view["devices"] if d["phase"] in SETTLED_BAD]
            if bad:
                d = bad[0]
                raise DeploymentFailed(f"service {name} generation {generation}: {d['phase']} on {d['device']}: "
                                       f"{d['message'] or 'no reason given'}", view)
            if view["devices"] and all(d["phase"] == SETTLED_OK for d in view["devices"]):
                return view
            if time.monotonic() > deadline:
                pending = ", ".join(f"{d['device']}={d['phase']}" for d in view["devices"] if d["phase"] != "Healthy")
                raise DeploymentTimeout(f"service {name} not healthy after {timeout:.0f}s ({pending})")
            time.sleep(interval)
