"""ServiceManifest building: everything an agent needs to run one generation of a service.

Models with their file digests, the entry script's source bundle (or the one ONNX file a
no-code deployment serves), the pip environment and its cache key, runtime tuning,
resources, port and auth keys, TLS (sslEnabled: the certificate itself is per device, see tls.py), and
the OCI base to pull from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hub.deployconfig import environment_digest, parse_deployment_config
from hub.deployments.spec import ServiceSpec
from hub.errors import BadInput
from protos.edgeport.v1 import agent_pb2


@dataclass
class ResolvedModel:
    """A registered model version as deployments need it."""

    name: str
    version: int
    files: list[dict[str, Any]]  # [{"path", "digest", "size"}]
    manifest_digest: str = ""


# (name, version or None for latest) -> ResolvedModel; raises NotFound.
ModelResolver = Callable[[str, int | None], ResolvedModel]


def build_manifest(
    name: str,
    generation: int,
    spec: ServiceSpec,
    models: list[ResolvedModel],
    keys: dict[str, str],
    *,
    registry_url: str,
    blob_exists: Callable[[str], bool],
) -> agent_pb2.ServiceManifest:
    """The manifest of `name` at `generation`; BadInput when a source file was never uploaded or no model fits."""
    dc = parse_deployment_config(spec.deployment)
    m = agent_pb2.ServiceManifest(
        name=name,
        generation=generation,
        port=dc.port,
        health_timeout_s=dc.health_timeout_s,
        registry=registry_url,
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
            if not blob_exists(f.digest):
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
    if dc.ssl_enabled:
        m.tls.CopyFrom(
            agent_pb2.TlsSettings(
                enabled=True,
                cname=dc.ssl_cname,
                user_certificate=bool(dc.ssl_certificate),
                # The user's certificate is public and the same for every device; their key is not in here.
                certificate_pem=dc.ssl_certificate.encode(),
            )
        )
    return m


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
