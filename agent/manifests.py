"""A ServiceManifest read for this device: the runtime it asks for, where its blobs come from, and the
status the agent reports about it.

Pure functions of the manifest (and of what the agent was told), shared by the reconciler and the work
it starts, so each reads a manifest the same way.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from pathlib import Path

from agent.service_tls import TlsFiles, tls_dir
from agent.supervisor import RuntimeSpec
from protos.edgeport.v1 import agent_pb2


def service_status(
    m: agent_pb2.ServiceManifest | None,
    name: str,
    phase: agent_pb2.Phase,
    message: str = "",
    *,
    scoring_uri: str = "",
    swagger_uri: str = "",
    serving_generation: int = 0,
    log_tail: Iterable[str] = (),
    restarts: int = 0,
) -> agent_pb2.DeploymentStatus:
    """The status of service `name` (at the generation of `m`, when given) in `phase`."""
    # The defaults are proto3's own (fields without presence): passing them equals leaving them out.
    return agent_pb2.DeploymentStatus(
        service=name,
        generation=m.generation if m else 0,
        phase=phase,
        message=message,
        scoring_uri=scoring_uri,
        swagger_uri=swagger_uri,
        serving_generation=serving_generation,
        log_tail=log_tail,
        restarts=restarts,
    )


def registry_for(m: agent_pb2.ServiceManifest, default_registry: str) -> str:
    """Where to pull from: the manifest's registry, unless it names an unspecified address (a hub bound to
    0.0.0.0 cannot be reached there from another machine): then the hub the agent enrolled with."""
    if not m.registry:
        return default_registry
    host = urllib.parse.urlsplit(m.registry if "://" in m.registry else f"http://{m.registry}").hostname
    return default_registry if host in (None, "", "0.0.0.0", "::") else m.registry


def tls_files(m: agent_pb2.ServiceManifest, service_dir: Path) -> TlsFiles | None:
    """Where the runtime of `m` finds its certificate and key (None: plain HTTP). See agent/service_tls.py."""
    if not m.tls.enabled:
        return None
    folder = tls_dir(service_dir)
    if m.tls.user_certificate:
        return TlsFiles(folder / "user.crt", folder / "user.key")
    return TlsFiles(folder / "runtime.crt", folder / "runtime.key")


def runtime_spec(
    m: agent_pb2.ServiceManifest, gen_dir: Path, port: int, grpc_port: int, python: str, host: str
) -> RuntimeSpec:
    """The runtime `m` asks for, its files laid out under `gen_dir` (in its service's folder), on `host`:`port`."""
    secrets = {}  # EDGEPORT_* keys go in the environment, never on the command line
    if m.auth.primary_key:
        secrets["EDGEPORT_PRIMARY_KEY"] = m.auth.primary_key
    if m.auth.secondary_key:
        secrets["EDGEPORT_SECONDARY_KEY"] = m.auth.secondary_key
    if m.auth.token_secret:
        secrets["EDGEPORT_TOKEN_SECRET"] = m.auth.token_secret
    tls = tls_files(m, gen_dir.parent)
    return RuntimeSpec(
        service=m.name,
        generation=m.generation,
        python=python,
        model_dir=gen_dir / "models",
        source_dir=(gen_dir / "source") if m.source.files else None,
        entry_script=m.source.entry_script if m.source.files else "",
        onnx_file=m.runtime.onnx_file,
        port=port,
        grpc_port=grpc_port,
        host=host,
        auth_mode=m.auth.mode or "none",
        secrets=secrets,
        cpus=m.resources.cpu,
        execution_providers=list(m.runtime.execution_providers),
        quantize_int8=m.runtime.quantize_int8,
        max_batch_size=m.runtime.max_batch_size,
        max_batch_delay_ms=m.runtime.max_batch_delay_ms,
        max_body_bytes=m.runtime.max_body_bytes,
        environment=dict(m.runtime.environment_variables),
        tls_cert=tls.cert if tls else None,
        tls_key=tls.key if tls else None,
        service_dir=gen_dir.parent,
    )
