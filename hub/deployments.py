"""DeploymentService: desired state per service, generations that only grow, per-device DesiredState.

A service is (models, inference, deployment config, target) at a generation. Every change
writes a new generation with its full ServiceManifest; a device's DesiredState is all active
services whose target selects it, and its revision grows whenever that set of
(service, generation) pairs changes. Statuses for an older generation never overwrite a newer one.
"""

from __future__ import annotations

import builtins  # below `def list`, a bare `list[...]` annotation in the class names that method
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hub.deployconfig import environment_digest, parse_deployment_config
from hub.errors import BadInput, Conflict, NotFound
from hub.fleet import FleetService, selects
from hub.names import parse_labels, validate_fleet_name
from hub.store.deployments import DeploymentStore
from protos.edgeport.v1 import agent_pb2

PHASES = {
    agent_pb2.PHASE_UNSPECIFIED: "Pending",
    agent_pb2.PENDING: "Pending",
    agent_pb2.PULLING: "Pulling",
    agent_pb2.STARTING: "Starting",
    agent_pb2.HEALTHY: "Healthy",
    agent_pb2.FAILED: "Failed",
    agent_pb2.ROLLED_BACK: "RolledBack",
    agent_pb2.REMOVED: "Removed",
    agent_pb2.RESTARTING: "Restarting",
}
FAILED_PHASES = {agent_pb2.FAILED, agent_pb2.ROLLED_BACK}
_SPEC_KEYS = {"name", "models", "target", "inference", "deployment"}
_INFERENCE_KEYS = {"entry_script", "source_files", "requirements", "environment_variables", "description"}


@dataclass
class ResolvedModel:
    """A registered model version as deployments need it."""

    name: str
    version: int
    files: list[dict[str, Any]]  # [{"path", "digest", "size"}]
    manifest_digest: str = ""


# (name, version or None for latest) -> ResolvedModel; raises NotFound.
ModelResolver = Callable[[str, int | None], ResolvedModel]


@dataclass
class ModelRef:
    """NAME:VERSION as given on the command line."""

    name: str
    version: int | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """Parse `NAME[:VERSION]`; BadInput otherwise."""
        if not isinstance(text, str) or not text:
            raise BadInput(f"invalid model reference {text!r}: expected NAME:VERSION")
        name, _, version = text.partition(":")
        if not name or (version and not version.isdigit()):
            raise BadInput(f"invalid model reference {text!r}: expected NAME:VERSION with a numeric version")
        return cls(name=name, version=int(version) if version else None)


@dataclass
class _Spec:
    """A validated request for one generation."""

    models: list[ModelRef]
    target: str
    inference: dict[str, Any] | None
    deployment: dict[str, Any] = field(default_factory=dict)


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
        self.on_devices_changed: Callable[[list[str]], None] = lambda ids: None
        fleet.on_enrolled.append(lambda device_id: self.refresh([device_id]))

    # ---- commands ----

    def create(self, request: dict[str, Any], *, overwrite: bool = False) -> dict[str, Any]:
        """Deploy a new service (or, with overwrite, replace one) at its next generation."""
        _check_keys("deploy request", request, _SPEC_KEYS)
        name = validate_fleet_name("service", request.get("name", ""))
        existing = self.store.get(name)
        if existing is not None and existing["state"] == "active" and not overwrite:
            raise Conflict(f"service {name} already exists; use `hub service update -n {name}` or --overwrite")
        spec = self._validate(name, request)
        return self._write(name, spec, existing)

    def update(self, name: str, request: dict[str, Any]) -> dict[str, Any]:
        """Roll an existing service to a new generation; fields left out keep their current value."""
        _check_keys("update request", request, _SPEC_KEYS - {"name"})
        existing = self._active(name)
        merged = {**existing["spec"], **{k: v for k, v in request.items() if v is not None}}
        spec = self._validate(name, merged)
        return self._write(name, spec, existing)

    def delete(self, name: str) -> dict[str, Any]:
        """Take a service out of every device's desired state; the agents stop and clean it up."""
        existing = self._active(name)
        devices = self.fleet.select(existing["target"])
        self.store.mark_deleted(name)
        self.store.drop_statuses(name)
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
        self._write(name, self._validate(name, existing["spec"]), self.store.get(name))
        return self.keys(name)

    # ---- validation and manifests ----

    def _validate(self, name: str, request: dict[str, Any]) -> _Spec:
        models = request.get("models")
        if not isinstance(models, list) or not models:
            raise BadInput("at least one model is required (-m NAME:VERSION)")
        refs = [ModelRef.parse(m) for m in models]
        target = request.get("target")
        if not isinstance(target, str) or not target.strip():
            raise BadInput("a target is required (--target DEVICE or label=value)")
        target = target.strip()
        if "=" not in target:
            validate_fleet_name("target device", target)
        else:
            parse_labels([p for p in target.split(",") if p.strip()])
        if not self.fleet.select(target):
            raise BadInput(f"target {target!r} selects no device (see `hub device list` for labels)")
        deployment = request.get("deployment") or {}
        parse_deployment_config(deployment)
        inference = request.get("inference")
        if inference is not None:
            _check_keys("inference", inference, _INFERENCE_KEYS)
            if not isinstance(inference.get("entry_script"), str) or not inference["entry_script"]:
                raise BadInput("inference: entry_script is required")
        return _Spec(models=refs, target=target, inference=inference, deployment=deployment)

    def _write(self, name: str, spec: _Spec, existing: dict[str, Any] | None) -> dict[str, Any]:
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
        manifest = self._manifest(name, generation, spec, resolved, keys)
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

    def _manifest(
        self, name: str, generation: int, spec: _Spec, models: list[ResolvedModel], keys: dict[str, str]
    ) -> agent_pb2.ServiceManifest:
        dc = parse_deployment_config(spec.deployment)
        m = agent_pb2.ServiceManifest(
            name=name,
            generation=generation,
            port=dc.port,
            health_timeout_s=dc.health_timeout_s,
            registry=self.registry_url,
        )
        for r in models:
            m.models.append(
                agent_pb2.ModelArtifact(
                    name=r.name,
                    version=r.version,
                    repository=f"models/{r.name}",
                    reference=str(r.version),
                    manifest_digest=r.manifest_digest,
                    files=[agent_pb2.FileRef(path=f["path"], digest=f["digest"], size=int(f["size"])) for f in r.files],
                )
            )
        requirements: list[str] = []
        env_vars: dict[str, str] = {}
        onnx_file = ""
        if spec.inference is not None:
            files = _file_refs("inference.source_files", spec.inference.get("source_files") or [])
            for f in files:
                if not self.blob_exists(f.digest):
                    raise BadInput(f"source file {f.path} ({f.digest}) was not uploaded to the hub")
            if spec.inference["entry_script"] not in {f.path for f in files}:
                raise BadInput(f"entry script {spec.inference['entry_script']} is not among the source files")
            m.source.CopyFrom(
                agent_pb2.SourceBundle(
                    entry_script=spec.inference["entry_script"], repository=f"sources/{name}", files=files
                )
            )
            requirements = [str(r) for r in spec.inference.get("requirements") or []]
            env_vars = {str(k): str(v) for k, v in (spec.inference.get("environment_variables") or {}).items()}
        else:
            onnx_file = _pick_onnx(models)
        m.environment.CopyFrom(
            agent_pb2.Environment(digest=environment_digest(requirements), pip_requirements=requirements)
        )
        m.runtime.CopyFrom(
            agent_pb2.RuntimeSettings(
                onnx_file=onnx_file,
                max_batch_size=dc.max_batch_size,
                max_batch_delay_ms=dc.max_batch_delay_ms,
                execution_providers=dc.execution_providers,
                quantize_int8=dc.quantize_int8,
                max_body_bytes=dc.max_body_bytes,
                environment_variables=env_vars,
            )
        )
        m.resources.CopyFrom(agent_pb2.Resources(cpu=dc.cpu, memory_gb=dc.memory_gb))
        m.auth.CopyFrom(
            agent_pb2.AuthSettings(
                mode=dc.auth_mode,
                primary_key=keys.get("primary", ""),
                secondary_key=keys.get("secondary", ""),
                token_secret=keys.get("token_secret", ""),
            )
        )
        return m

    # ---- desired state ----

    def _services_for(self, standing: dict[str, Any] | None) -> list[tuple[str, int]]:
        """(service, generation) of every active service whose target selects this device row."""
        if standing is None or standing["state"] != "enrolled":
            return []
        return [(name, generation) for name, generation, target in self.store.targets() if selects(standing, target)]

    def refresh(self, device_ids: list[str] | None = None) -> None:
        """Recompute the devices' desired sets, bump revisions that changed (one transaction), tell the fronts."""
        fingerprints = {
            row["id"]: _fingerprint(self._services_for(row))
            for row in self.fleet.standings(device_ids)
            if row["state"] != "revoked"
        }
        self.fleet.set_desired_many(fingerprints)
        notify = list(fingerprints) if device_ids is None else list(device_ids)
        if notify:
            self.on_devices_changed(notify)

    def desired_state(self, device_id: str) -> agent_pb2.DesiredState:
        """The complete set of manifests for one device, with its current revision."""
        return self._desired(device_id, self.fleet.standing(device_id), {})

    def desired_states(self, device_ids: list[str]) -> dict[str, agent_pb2.DesiredState]:
        """`desired_state` of every enrolled device among `device_ids` (others are left out), reading the
        devices' rows in one pass and building each distinct set of services once: a rollout to 10,000
        devices asks for all of them at once."""
        built: dict[tuple[tuple[str, int], ...], bytes] = {}
        return {
            row["id"]: self._desired(row["id"], row, built)
            for row in self.fleet.standings(device_ids)
            if row["state"] == "enrolled"
        }

    def _desired(
        self, device_id: str, standing: dict[str, Any] | None, built: dict[tuple[tuple[str, int], ...], bytes]
    ) -> agent_pb2.DesiredState:
        services = self._services_for(standing)
        fingerprint = _fingerprint(services)
        if standing is not None and standing["desired_fingerprint"] == fingerprint:
            revision = standing["desired_revision"]  # the usual case: refresh() already stored it
        else:
            revision = self.fleet.set_desired(device_id, fingerprint)
        key = tuple(services)
        body = built.get(key)
        if body is None:  # the services part, serialized once per distinct set
            part = agent_pb2.DesiredState()
            for name, generation in services:
                blob = self.store.manifest(name, generation)
                if blob is not None:
                    part.services.add().MergeFromString(blob)
            body = built[key] = part.SerializeToString()
        state = agent_pb2.DesiredState(revision=revision)
        state.MergeFromString(body)
        return state

    # ---- statuses ----

    def record_status(self, device_id: str, status: agent_pb2.DeploymentStatus) -> None:
        """Store a device's DeploymentStatus (older generations never overwrite newer ones)."""
        if self.store.state(status.service) != "active" or status.phase == agent_pb2.REMOVED:
            self.store.drop_statuses(status.service, [device_id])
            return
        self.store.put_status(
            {
                "service": status.service,
                "device": device_id,
                "generation": status.generation,
                "phase": status.phase,
                "message": status.message,
                "scoring_uri": status.scoring_uri,
                "swagger_uri": status.swagger_uri,
                "serving_generation": status.serving_generation,
                "log_tail": list(status.log_tail),
                "restarts": status.restarts,
                "updated_at": time.time(),
            }
        )

    def record_report(self, device_id: str, report: agent_pb2.ServiceReport) -> None:
        """A Hello's summary of a running service: fills in what the hub may have missed."""
        if self.store.state(report.service) != "active":
            return
        old = self.store.status(report.service, device_id)
        if old is not None and (
            old["generation"] > report.generation
            or (old["generation"] == report.generation and old["phase"] == report.phase)
        ):
            return
        row = dict(old) if old is not None and old["generation"] == report.generation else {}
        row.update(
            {
                "service": report.service,
                "device": device_id,
                "generation": report.generation,
                "phase": report.phase,
                "scoring_uri": report.scoring_uri or row.get("scoring_uri", ""),
                "updated_at": time.time(),
            }
        )
        row.setdefault("serving_generation", report.generation if report.phase == agent_pb2.HEALTHY else 0)
        self.store.put_status(row)

    # ---- queries ----

    def _active(self, name: str) -> dict[str, Any]:
        row = self.store.get(name)
        if row is None or row["state"] != "active":
            raise NotFound(f"service {name} not found")
        return row

    def show(self, name: str) -> dict[str, Any]:
        """The public view: state, generation, per-device phase and URIs."""
        row = self._active(name)
        generation = row["generation"]
        statuses = self.store.statuses(name)
        devices = []
        # The devices the target selects now; statuses of devices that left it are on their way out.
        for standing in self.fleet.select_standings(row["target"]):  # one read, not one per device
            device_id = standing["id"]
            st = statuses.get(device_id)
            current = st if st is not None and st["generation"] == generation else None  # its status now
            phase = PHASES.get(current["phase"], "Pending") if current is not None else "Pending"
            online = bool(standing["online"])
            waiting = "waiting for the device" + ("" if online else " (offline: it gets this when it connects)")
            devices.append(
                {
                    "device": device_id,
                    "phase": phase,
                    "generation": st["generation"] if st else 0,
                    "serving_generation": st["serving_generation"] if st else 0,
                    "scoring_uri": st["scoring_uri"] if st else "",
                    "swagger_uri": st["swagger_uri"] if st else "",
                    "message": current["message"] if current is not None else waiting,
                    "online": online,
                    "log_tail": current["log_tail"] if current is not None else [],
                    "restarts": st["restarts"] if st else 0,
                }
            )
        phases = [d["phase"] for d in devices]
        if phases and all(p == "Healthy" for p in phases):
            state = "Healthy"
        elif any(p in ("Failed", "RolledBack") for p in phases):
            state = "Failed"
        elif any(p == "Restarting" for p in phases):
            state = "Unhealthy"  # it was serving; a runtime crashed and is being restarted
        else:
            state = "Transitioning"
        spec = row["spec"]
        dc = parse_deployment_config(spec.get("deployment") or {})
        return {
            "name": name,
            "state": state,
            "generation": generation,
            "target": row["target"],
            "models": spec["models"],
            "entry_script": (spec.get("inference") or {}).get("entry_script"),
            "auth": dc.auth_mode,
            "created": _iso(row["created_at"]),
            "updated": _iso(row["updated_at"]),
            "devices": devices,
        }

    def list(self) -> list[dict[str, Any]]:
        """Every active service's view."""
        return [self.show(s["name"]) for s in self.store.active()]

    def keys(self, name: str) -> dict[str, str]:
        """Primary and secondary keys of a service with key auth."""
        row = self._active(name)
        if not row["keys"]:
            raise Conflict(f"service {name} has authentication disabled: it has no keys")
        return {"primaryKey": row["keys"]["primary"], "secondaryKey": row["keys"]["secondary"]}

    def device_services(self, device_id: str) -> builtins.list[dict[str, Any]]:
        """Services on one device with their phases."""
        return [
            {
                "service": r["service"],
                "generation": r["generation"],
                "phase": PHASES.get(r["phase"], "Pending"),
                "scoring_uri": r["scoring_uri"],
            }
            for r in self.store.device_statuses(device_id)
        ]

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


def _fingerprint(services: list[tuple[str, int]]) -> str:
    """What a device's desired revision stands for: its set of (service, generation)."""
    return hashlib.sha256(",".join(f"{name}:{generation}" for name, generation in services).encode()).hexdigest()


def _check_keys(where: str, data: Any, allowed: set[str]) -> None:
    if not isinstance(data, dict):
        raise BadInput(f"{where}: expected a JSON object")
    for key in data:
        if key not in allowed:
            raise BadInput(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")


def _file_refs(where: str, files: Any) -> list[agent_pb2.FileRef]:
    if not isinstance(files, list):
        raise BadInput(f"{where}: expected a list of files")
    out = []
    for f in files:
        if not isinstance(f, dict) or not {"path", "digest", "size"} <= set(f):
            raise BadInput(f"{where}: each file needs path, digest and size")
        path = str(f["path"])
        if path.startswith("/") or ".." in path.split("/"):
            raise BadInput(f"{where}: file path {path!r} must be relative and stay inside the folder")
        out.append(agent_pb2.FileRef(path=path, digest=str(f["digest"]), size=int(f["size"])))
    return out


def _pick_onnx(models: list[ResolvedModel]) -> str:
    if len(models) != 1:
        raise BadInput("a no-code ONNX deployment serves exactly one model; give an inference config (--ic) for more")
    onnx = [f["path"] for f in models[0].files if f["path"].endswith(".onnx")]
    if not onnx:
        raise BadInput(f"model {models[0].name}:{models[0].version} has no .onnx file; give an inference config (--ic)")
    if len(onnx) > 1:
        preferred = [p for p in onnx if p.rsplit("/", 1)[-1] == "model.onnx"]
        if len(preferred) != 1:
            raise BadInput(f"model {models[0].name}:{models[0].version} has several .onnx files; give an --ic")
        return preferred[0]
    return onnx[0]


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
