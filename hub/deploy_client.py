"""`DeployClient`: the control-plane calls the CLI and the SDK share (devices, services, telemetry), over HubClient.

It also turns an inference config into what the hub stores (a snapshot of the entry
script's folder, filtered by its ignore files, uploaded as blobs) and waits for a service
generation to settle, reporting each device's phase changes as they happen.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

from hub.client import HubClient
from hub.deployconfig import InferenceConfig
from hub.errors import BadInput, HubError
from hub.sourcedir import snapshot_source

# Called with (device, phase, message) whenever a device's phase for the awaited generation changes.
PhaseChange = Callable[[str, str, str], None]
# Called with (kind, text), kind "info" or "warning", about what a source upload is about to send.
Notify = Callable[[str, str], None]
SETTLED_OK = "Healthy"
SETTLED_BAD = ("Failed", "RolledBack")


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

    def enroll_device(
        self, name: str, labels: list[str], expires: str = "1h", *, replace: bool = False
    ) -> dict[str, str]:
        """Register a device (`replace`: the name of a revoked one); `{"device", "token", "expires"}`."""
        body = {"name": name, "labels": labels, "expires": expires, "replace": replace}
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

    def upload_inference(self, ic: InferenceConfig, notify: Notify | None = None) -> dict[str, Any]:
        """Upload a snapshot of the entry script's folder (skipping stored blobs); the `inference` part of a deploy.

        The folder is filtered by `.amlignore` (or `.gitignore`) and every kept file is copied
        and hashed before the first byte goes out (hub.sourcedir), so a file that changes while
        it is read fails here, naming it, with nothing uploaded or registered. `notify(kind,
        text)` gets the "uploading N files" line (kind "info") and each warning (kind "warning":
        key-like files, a large folder); without it, warnings go through `warnings.warn`.
        """
        assert ic.source_directory is not None and ic.entry_script is not None
        with snapshot_source(ic.source_directory) as snapshot:
            kept = {f.path for f in snapshot.files}
            if ic.entry_script not in kept:
                raise BadInput(f"entry script {ic.entry_script} is left out of {ic.source_directory} by "
                               f"{', '.join(snapshot.ignore_files) or 'an ignore file'}; it must be uploaded")
            if notify is not None:
                notify("info", snapshot.summary())
            for text in snapshot.warnings():
                if notify is not None:
                    notify("warning", text)
                else:
                    warnings.warn(text, UserWarning, stacklevel=2)
            for f in snapshot.files:
                self.hub.upload_blob(f.copy, f.digest, f.size)
            source_files = [{"path": f.path, "digest": f.digest, "size": f.size} for f in snapshot.files]
        return {
            "entry_script": ic.entry_script,
            "source_files": source_files,
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

    def token(self, name: str, ttl_seconds: int = 3600) -> dict[str, Any]:
        """A scoring token for a service with token auth: `{"accessToken", "tokenType", "expiryOn", "refreshAfter"}`."""
        return self.hub.request("POST", f"/api/v1/services/{name}/token", json={"ttl_seconds": ttl_seconds}).json()

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
