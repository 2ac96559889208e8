"""DeploymentService: the commands on services (deploy, update, delete, new keys) and the queries about them.

A service is (models, inference, deployment config, target) at a generation. Every change
writes a new generation with its full ServiceManifest, then recomputes the desired state of
every device the old or new target selects and tells the fronts. The parts each live in a
module of their own: request checks (spec), manifests (manifest), per-device desired state
(desired), device reports (status) and what users see (views).
"""

from __future__ import annotations

import base64
import builtins  # below `def list`, a bare `list[...]` annotation in the class names that method
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from hub.deployconfig import parse_deployment_config
from hub.deployments.desired import DesiredStates
from hub.deployments.manifest import ModelResolver, build_manifest
from hub.deployments.spec import SPEC_KEYS, ServiceSpec, check_keys, validate_spec
from hub.deployments.status import record_report, record_status
from hub.deployments.views import device_services_view, service_view
from hub.errors import BadInput, Conflict, NotFound
from hub.fleet import FleetService
from hub.names import validate_fleet_name
from hub.store.deployments import DeploymentStore
from protos.edgeport.v1 import agent_pb2

TLS_NOTIFY_DELAY_S = 0.2
DEFAULT_TOKEN_TTL_S = 3600.0
MAX_TOKEN_TTL_S = 24 * 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class DeploymentService:
    """Services, their generations and statuses; the source of every device's DesiredState."""

    def __init__(
        self,
        store: DeploymentStore,
        fleet: FleetService,
        resolve_model: ModelResolver,
        blob_exists: Callable[[str], bool],
        *,
        registry_url: str,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.resolve_model = resolve_model
        self.blob_exists = blob_exists
        self.registry_url = registry_url
        self.desired = DesiredStates(store, fleet)
        # Told the devices whose desired state may have changed; HubServices points it at the fronts.
        self.on_devices_changed: Callable[[builtins.list[str]], None] = lambda ids: None

    # ---- commands ----

    def create(self, request: dict[str, Any], *, overwrite: bool = False) -> dict[str, Any]:
        """Deploy a new service (or, with overwrite, replace one) at its next generation."""
        check_keys("deploy request", request, SPEC_KEYS)
        name = validate_fleet_name("service", request.get("name", ""))
        existing = self.store.get(name)
        if existing is not None and existing["state"] == "active" and not overwrite:
            raise Conflict(f"service {name} already exists; use `hub service update -n {name}` or --overwrite")
        spec = validate_spec(request, self.fleet.select)
        return self._write(name, spec, existing)

    def update(self, name: str, request: dict[str, Any]) -> dict[str, Any]:
        """Roll an existing service to a new generation; fields left out keep their current value."""
        check_keys("update request", request, SPEC_KEYS - {"name"})
        existing = self._active(name)
        merged = {**existing["spec"], **{k: v for k, v in request.items() if v is not None}}
        spec = validate_spec(merged, self.fleet.select)
        return self._write(name, spec, existing)

    def delete(self, name: str) -> dict[str, Any]:
        """Take a service out of every device's desired state; the agents stop and clean it up."""
        existing = self._active(name)
        devices = self.fleet.select(existing["target"])
        self.store.mark_deleted(name)
        self.store.drop_statuses(name)
        self.store.drop_certificates(name)
        self.refresh(devices)
        return {"name": name, "state": "Deleted", "generation": existing["generation"]}

    def regenerate_key(self, name: str, which: str) -> dict[str, str]:
        """New primary or secondary key; a new generation carries it to the devices."""
        existing = self._active(name)
        if which not in ("primary", "secondary"):
            raise BadInput(f"key must be 'primary' or 'secondary', not {which!r}")
        if not existing["keys"]:
            raise Conflict(f"service {name} has authentication disabled: it has no keys")
        keys = {**existing["keys"], which: secrets.token_urlsafe(32)}
        self.store.set_keys(name, keys)
        self._write(name, validate_spec(existing["spec"], self.fleet.select), self.store.get(name))
        return self.keys(name)

    def _write(self, name: str, spec: ServiceSpec, existing: dict[str, Any] | None) -> dict[str, Any]:
        dc = parse_deployment_config(spec.deployment)
        resolved = [self.resolve_model(m.name, m.version) for m in spec.models]
        keys = dict(existing["keys"]) if existing and existing["keys"] else {}
        if dc.auth_mode == "none":
            keys = {}
        elif not keys:
            keys = {
                "primary": secrets.token_urlsafe(32),
                "secondary": secrets.token_urlsafe(32),
                "token_secret": secrets.token_urlsafe(32),
            }
        old_generation = existing["generation"] if existing else 0
        generation = old_generation + 1
        manifest = build_manifest(
            name, generation, spec, resolved, keys, registry_url=self.registry_url, blob_exists=self.blob_exists
        )
        stored_spec = {
            "models": [f"{r.name}:{r.version}" for r in resolved],
            "target": spec.target,
            "inference": spec.inference,
            "deployment": spec.deployment,
        }
        ok = self.store.put_generation(
            name,
            generation,
            spec.target,
            stored_spec,
            keys,
            manifest.SerializeToString(),
            [(r.name, r.version) for r in resolved],
            expect_generation=old_generation,
        )
        if not ok:
            raise Conflict(f"service {name} was changed by someone else meanwhile; try again")
        old_devices = self.fleet.select(existing["target"]) if existing else []
        self.refresh(sorted(set(old_devices) | set(self.fleet.select(spec.target))))
        return self.show(name)

    # ---- desired state ----

    def refresh(self, device_ids: builtins.list[str] | None = None) -> None:
        """Recompute the devices' desired sets, bump revisions that changed (one transaction), tell the fronts."""
        notify = self.desired.refresh(device_ids)
        if notify:
            self.on_devices_changed(notify)

    def desired_state(self, device_id: str) -> agent_pb2.DesiredState:
        """The complete set of manifests for one device, with its current revision."""
        return self.desired.desired_state(device_id)

    def desired_states(self, device_ids: builtins.list[str]) -> dict[str, agent_pb2.DesiredState]:
        """`desired_state` of every enrolled device among `device_ids` (others are left out), in one pass."""
        return self.desired.desired_states(device_ids)

    def signed_desired_state(self, device_id: str) -> agent_pb2.SignedDesiredState:
        """`desired_state` signed by the hub: what the fronts send."""
        return self.desired.signed_state(device_id)

    def signed_desired_states(self, device_ids: builtins.list[str]) -> dict[str, agent_pb2.SignedDesiredState]:
        """`desired_states` signed by the hub: what the fronts send."""
        return self.desired.signed_states(device_ids)

    # ---- statuses ----

    def record_status(self, device_id: str, status: agent_pb2.DeploymentStatus) -> None:
        """Store a device's DeploymentStatus (older generations never overwrite newer ones); answer the TLS
        request it may carry with a certificate in the device's next desired state."""
        if not status.HasField("tls_request"):
            record_status(self.store, device_id, status)
            return
        try:
            issued = self.desired.tls.answer(device_id, status)
        except BadInput as exc:  # the device keeps waiting: `hub service show` says why
            refused = agent_pb2.DeploymentStatus()
            refused.CopyFrom(status)
            refused.message = f"{status.message}: the hub refused its request: {exc.message}"
            record_status(self.store, device_id, refused)
            raise
        record_status(self.store, device_id, status)
        if issued:
            self.desired.refresh([device_id])  # a new revision, in the caller's transaction
        # Told once the caller's transaction has committed (a front reading before would send the old state);
        # while a device waits it asks again every few seconds, which tells the fronts again.
        timer = threading.Timer(TLS_NOTIFY_DELAY_S, self.on_devices_changed, [[device_id]])
        timer.daemon = True
        timer.start()

    def record_report(self, device_id: str, report: agent_pb2.ServiceReport) -> None:
        """A Hello's summary of a running service: fills in what the hub may have missed."""
        record_report(self.store, device_id, report)

    # ---- queries ----

    def _active(self, name: str) -> dict[str, Any]:
        row = self.store.get(name)
        if row is None or row["state"] != "active":
            raise NotFound(f"service {name} not found")
        return row

    def show(self, name: str) -> dict[str, Any]:
        """The public view: state, generation, per-device phase and URIs."""
        row = self._active(name)
        # The devices the target selects now, in one read, not one per device.
        standings = self.fleet.select_standings(row["target"])
        refusals = self.fleet.current_refusals([s["id"] for s in standings])
        view = service_view(row, self.store.statuses(name), standings, refusals)
        if view["tls"] is not None and view["tls"]["issuer"] == "hub":
            view["tls"]["ca_pem"] = self.fleet.ca.ca_pem.decode()  # what clients verify the runtimes against
        return view

    def list(self) -> builtins.list[dict[str, Any]]:
        """Every active service's view."""
        return [self.show(s["name"]) for s in self.store.active()]

    def token(self, name: str, ttl_s: float = DEFAULT_TOKEN_TTL_S) -> dict[str, Any]:
        """A scoring token for a service with tokenAuthEnabled: `{"accessToken", "tokenType", "expiryOn",
        "refreshAfter"}` (unix seconds), as the runtime's token mode checks it (runtimes/README.md)."""
        row = self._active(name)
        dc = parse_deployment_config(row["spec"].get("deployment") or {})
        if dc.auth_mode != "token" or not row["keys"].get("token_secret"):
            raise Conflict(f"service {name} does not use token auth (deploy it with \"tokenAuthEnabled\": true)")
        if not 60 <= ttl_s <= MAX_TOKEN_TTL_S:
            raise BadInput(f"token lifetime must be 60 s to {MAX_TOKEN_TTL_S // 3600} h, got {ttl_s:g} s")
        now = time.time()
        expiry = int(now + ttl_s)
        # The runtime's token format: base64url(JSON {"service", "exp"}) "." base64url(HMAC-SHA256(secret, payload)).
        payload = _b64(json.dumps({"service": name, "exp": expiry}, separators=(",", ":")).encode())
        signature = _b64(hmac.new(row["keys"]["token_secret"].encode(), payload.encode(), hashlib.sha256).digest())
        return {
            "accessToken": f"{payload}.{signature}",
            "tokenType": "Bearer",
            "expiryOn": expiry,
            "refreshAfter": int(now + ttl_s / 2),
        }

    def keys(self, name: str) -> dict[str, str]:
        """Primary and secondary keys of a service with key auth."""
        row = self._active(name)
        if not row["keys"]:
            raise Conflict(f"service {name} has authentication disabled: it has no keys")
        return {"primaryKey": row["keys"]["primary"], "secondaryKey": row["keys"]["secondary"]}

    def device_services(self, device_id: str) -> builtins.list[dict[str, Any]]:
        """Services on one device with their phases."""
        return device_services_view(self.store.device_statuses(device_id))

    def services_using(self, model: str, version: int) -> builtins.list[str]:
        """Active services whose current (or still serving) generation uses model:version (registry in-use hook)."""
        users: set[str] = set()
        for service, generation in self.store.generations_using(model, version):
            row = self.store.get(service)
            if row is None or row["state"] != "active":
                continue
            serving = {s["serving_generation"] for s in self.store.statuses(service).values()}
            if generation == row["generation"] or generation in serving:
                users.add(service)
        return sorted(users)

    def knows_source_repository(self, repository: str) -> bool:
        """Whether `sources/<service>` names a service the hub has (the OCI endpoint serves its blobs)."""
        prefix, _, name = repository.partition("/")
        return prefix == "sources" and self.store.get(name) is not None
