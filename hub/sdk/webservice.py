"""`Webservice`, `InferenceConfig`, `DeploymentConfig`: deploy from Python and consume the service.

    ic = InferenceConfig(entry_script="score.py", source_directory="src", requirements=["numpy"])
    dc = DeploymentConfig(cpu_cores=1, memory_gb=0.5, auth_enabled=True)
    service = Model.deploy(ws, "scorer", [model], ic, dc, target="site=lab")
    service.wait_for_deployment(show_output=True)
    print(service.run(json.dumps({"data": [[...]]})))
"""

from __future__ import annotations

import datetime
import json
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from hub.deploy_client import DeployClient
from hub.deployconfig import InferenceConfig as ParsedInferenceConfig
from hub.deployconfig import load_json_file, parse_deployment_config, parse_inference_config, resolve_tls_files
from hub.errors import HubError
from hub.names import ModelRef, parse_target

if TYPE_CHECKING:
    from hub.sdk.workspace import Workspace


class ModelVersion(Protocol):
    """What a deploy needs of a model: a `Model`, or anything else with a name and a version."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int: ...


class InferenceConfig:
    """Entry script, its folder and its pip requirements (the inference config JSON, in Python)."""

    def __init__(
        self,
        entry_script: str,
        source_directory: str | Path | None = None,
        runtime: str = "python",
        conda_file: str | None = None,
        requirements: list[str] | str | None = None,
        environment_variables: dict[str, str] | None = None,
        description: str | None = None,
    ) -> None:
        data: dict[str, Any] = {"entryScript": entry_script, "runtime": runtime}
        for key, value in (("condaFile", conda_file), ("requirements", requirements),
                           ("environmentVariables", environment_variables), ("description", description)):
            if value is not None:
                data[key] = value
        self._data = data
        self._base = Path(source_directory) if source_directory is not None else Path.cwd()

    @classmethod
    def from_file(cls, path: str | Path) -> InferenceConfig:
        """Load an inferenceconfig.json (paths relative to its folder); unknown keys raise BadInput."""
        path = Path(path)
        data = load_json_file(path, "inference config")
        parsed = parse_inference_config(data, path.parent, where=f"inference config {path}")
        ic = cls.__new__(cls)
        ic._data = {k: v for k, v in data.items() if k != "sourceDirectory"}
        ic._base = parsed.source_directory or path.parent
        return ic

    def parsed(self) -> ParsedInferenceConfig:
        """Validated form (files checked on disk)."""
        return parse_inference_config(self._data, self._base)


class DeploymentConfig:
    """Resources, port, auth and runtime tuning (the deployment config JSON, in Python)."""

    def __init__(
        self,
        cpu_cores: float | None = None,
        memory_gb: float | None = None,
        port: int | None = None,
        auth_enabled: bool | None = None,
        token_auth_enabled: bool | None = None,
        health_timeout_seconds: int | None = None,
        compute_type: str = "edge",
        ssl_enabled: bool | None = None,
        ssl_cert_pem_file: str | Path | None = None,
        ssl_key_pem_file: str | Path | None = None,
        ssl_cname: str | None = None,
        **extra: Any,
    ) -> None:
        """Keyword names as Azure ML's; `ssl_cert_pem_file`/`ssl_key_pem_file` are read now (relative to the cwd)."""
        data: dict[str, Any] = {"computeType": compute_type}
        resources = {k: v for k, v in (("cpu", cpu_cores), ("memoryInGB", memory_gb)) if v is not None}
        if resources:
            data["containerResourceRequirements"] = resources
        for key, value in (("port", port), ("authEnabled", auth_enabled), ("tokenAuthEnabled", token_auth_enabled),
                           ("healthTimeoutSeconds", health_timeout_seconds), ("sslEnabled", ssl_enabled),
                           ("sslCertificate", None if ssl_cert_pem_file is None else str(ssl_cert_pem_file)),
                           ("sslKey", None if ssl_key_pem_file is None else str(ssl_key_pem_file)),
                           ("sslCname", ssl_cname)):  # fmt: skip
            if value is not None:
                data[key] = value
        data.update(extra)  # camelCase keys of the JSON shape (maxBatchSize, ...); unknown ones are refused
        data = resolve_tls_files(data, Path.cwd())
        parse_deployment_config(data)
        self._data = data

    @classmethod
    def from_file(cls, path: str | Path) -> DeploymentConfig:
        """Load a deploymentconfig.json; unknown keys raise BadInput."""
        where = f"deployment config {path}"
        data = resolve_tls_files(load_json_file(Path(path), "deployment config"), Path(path).parent, where)
        parse_deployment_config(data, where=where)
        dc = cls.__new__(cls)
        dc._data = data
        return dc

    def to_json(self) -> dict[str, Any]:
        """The deployment config JSON."""
        return dict(self._data)


def _model_ref(model: ModelVersion | str) -> str:
    if isinstance(model, str):
        return str(ModelRef.parse(model))  # a bad reference is refused before anything is uploaded
    return f"{model.name}:{model.version}"


class Webservice:
    """A deployed service: its state, per-device scoring URIs, keys, logs; `run` scores on a device."""

    def __init__(self, workspace: Workspace, name: str) -> None:
        self.workspace = workspace
        self.name = name
        self._client = DeployClient(workspace.client)
        self._view: dict[str, Any] = self._client.get_service(name)

    @classmethod
    def deploy(
        cls,
        workspace: Workspace,
        name: str,
        models: Sequence[ModelVersion | str],
        inference_config: InferenceConfig | None = None,
        deployment_config: DeploymentConfig | None = None,
        target: str | None = None,
        overwrite: bool = False,
    ) -> Webservice:
        """Record the service on the hub (returns at once; call `wait_for_deployment`)."""
        parse_target(target)  # a missing or malformed target is refused before anything is uploaded
        refs = [_model_ref(m) for m in models]
        client = DeployClient(workspace.client)
        inference = client.upload_inference(inference_config.parsed()) if inference_config else None
        dc = deployment_config.to_json() if deployment_config else {}
        client.deploy(name, refs, str(target), inference=inference, deployment=dc,
                      overwrite=overwrite)
        return cls(workspace, name)

    def reload(self) -> Webservice:
        """Fetch the current state from the hub."""
        self._view = self._client.get_service(self.name)
        return self

    def wait_for_deployment(self, show_output: bool = False, timeout_sec: float = 600.0) -> Webservice:
        """Block until every device is Healthy; raise HubError (with the reason) on Failed/RolledBack."""

        def show(device: str, phase: str, message: str) -> None:
            if show_output:
                print(f"{self.name} {device}: {phase}{' - ' + message if message else ''}", file=sys.stdout,
                      flush=True)

        self._view = self._client.wait(self.name, self._view["generation"], timeout=timeout_sec, on_change=show)
        return self

    @property
    def state(self) -> str:
        """Transitioning, Healthy, Failed or Unhealthy (as of the last reload/wait)."""
        return self._view["state"]

    @property
    def generation(self) -> int:
        """The service's current generation."""
        return self._view["generation"]

    @property
    def devices(self) -> list[dict[str, Any]]:
        """Per-device phase, message and URIs."""
        return self._view["devices"]

    @property
    def scoring_uris(self) -> dict[str, str]:
        """Scoring URI per device."""
        return {d["device"]: d["scoring_uri"] for d in self.devices if d["scoring_uri"]}

    @property
    def scoring_uri(self) -> str | None:
        """The first healthy device's scoring URI."""
        healthy = [d["scoring_uri"] for d in self.devices if d["phase"] == "Healthy" and d["scoring_uri"]]
        return healthy[0] if healthy else next(iter(self.scoring_uris.values()), None)

    @property
    def swagger_uri(self) -> str | None:
        """The first device's swagger URI."""
        return next((d["swagger_uri"] for d in self.devices if d["swagger_uri"]), None)

    def get_keys(self) -> tuple[str, str]:
        """(primary, secondary) keys of a service with authEnabled."""
        keys = self._client.keys(self.name)
        return keys["primaryKey"], keys["secondaryKey"]

    def get_token(self, ttl_seconds: int = 3600) -> tuple[str, datetime.datetime]:
        """(token, expiry as an aware UTC datetime) for a service with token auth (tokenAuthEnabled); send it as
        'Authorization: Bearer TOKEN'. Raises HubError when the service does not use token auth."""
        token = self._client.token(self.name, ttl_seconds)
        return token["accessToken"], datetime.datetime.fromtimestamp(token["expiryOn"], datetime.UTC)

    @property
    def ca_pem(self) -> str | None:
        """The hub CA (PEM) that an HTTPS service's certificates come from; None for HTTP or the user's own."""
        return (self._view.get("tls") or {}).get("ca_pem")

    def regen_key(self, key: str) -> None:
        """Replace the 'Primary' or 'Secondary' key (a new generation carries it to the devices)."""
        self._client.regenerate_key(self.name, key.lower())
        self.reload()

    def run(self, input_data: str | dict[str, Any] | list[Any], device: str | None = None) -> Any:
        """POST input to the scoring URI (of `device`, or the first healthy one); the parsed JSON answer."""
        uri = self.scoring_uris.get(device) if device else self.scoring_uri
        if not uri:
            raise HubError(f"service {self.name} has no scoring URI yet (state {self.state})")
        body = input_data if isinstance(input_data, str) else json.dumps(input_data)
        headers = {"Content-Type": "application/json"}
        if self._view.get("auth") == "key":
            headers["Authorization"] = f"Bearer {self.get_keys()[0]}"
        elif self._view.get("auth") == "token":
            headers["Authorization"] = f"Bearer {self.get_token()[0]}"
        # https: verified against the hub CA that issued the service's certificates (else the system's CAs).
        verify: ssl.SSLContext | bool = True
        if uri.startswith("https://") and self.ca_pem:
            verify = ssl.create_default_context(cadata=self.ca_pem)
        try:
            response = httpx.post(uri, content=body, headers=headers, timeout=60.0, verify=verify)
        except httpx.TransportError as exc:
            raise HubError(f"cannot reach {uri}: {exc}") from None
        if response.status_code >= 400:
            raise HubError(f"scoring at {uri} failed with HTTP {response.status_code}: {response.text[:300]}")
        try:
            return response.json()
        except ValueError:
            return response.text

    def update(
        self,
        models: Sequence[ModelVersion | str] | None = None,
        inference_config: InferenceConfig | None = None,
        deployment_config: DeploymentConfig | None = None,
    ) -> Webservice:
        """Roll to a new generation (the old one serves until it is healthy); call `wait_for_deployment`."""
        inference = self._client.upload_inference(inference_config.parsed()) if inference_config else None
        self._view = self._client.update(
            self.name,
            models=[_model_ref(m) for m in models] if models else None,
            inference=inference,
            deployment=deployment_config.to_json() if deployment_config else None,
        )
        return self

    def delete(self) -> None:
        """Delete the service; agents stop it."""
        self._client.delete_service(self.name)

    def get_logs(self, num_lines: int = 500) -> str:
        """The runtime's last log lines from each device."""
        parts = []
        for entry in self._client.logs(self.name, lines=num_lines):
            parts.append(f"==> {entry['device']} ({entry['source']}) <==")
            parts.extend(entry["lines"])
        return "\n".join(parts)

    @classmethod
    def list(cls, workspace: Workspace) -> list[Webservice]:
        """Every service on the hub."""
        return [cls(workspace, s["name"]) for s in DeployClient(workspace.client).list_services()]

    def __repr__(self) -> str:
        return f"Webservice({self.name!r}, state={self.state!r}, generation={self.generation})"
