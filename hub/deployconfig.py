"""Inference and deployment configs: the familiar JSON shapes, parsed strictly (unknown keys name the key).

Inference config (paths relative to the file's folder; entry script and conda file relative
to `sourceDirectory`, as the familiar tooling does):
    {"entryScript": "score.py", "sourceDirectory": "src", "runtime": "python",
     "condaFile": "env.yml" | "requirements": ["numpy"] | "requirements.txt",
     "environmentVariables": {"K": "V"}, "description": "..."}
Deployment config:
    {"computeType": "edge", "containerResourceRequirements": {"cpu": 1, "memoryInGB": 0.5},
     "port": 0, "authEnabled": false, "tokenAuthEnabled": false, "healthTimeoutSeconds": 60,
     "maxBatchSize": 1, "maxBatchDelayMs": 0, "executionProviders": [...], "quantizeInt8": false,
     "maxBodyBytes": 0, "description": "...", "tags": {}, "properties": {},
     "sslEnabled": false, "sslCertificate": "cert.pem", "sslKey": "key.pem", "sslCname": "scorer.example.com"}
`sslCertificate`/`sslKey` are file paths relative to the deployment config on the client, which reads them
(`resolve_tls_files`) and sends their PEM text; the hub checks the pair (`parse_deployment_config`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.errors import BadInput

INFERENCE_KEYS = {
    "entryScript",
    "sourceDirectory",
    "runtime",
    "condaFile",
    "requirements",
    "environmentVariables",
    "description",
    "enableGpu",
}
DEPLOYMENT_KEYS = {
    "computeType",
    "containerResourceRequirements",
    "port",
    "authEnabled",
    "tokenAuthEnabled",
    "healthTimeoutSeconds",
    "maxBatchSize",
    "maxBatchDelayMs",
    "executionProviders",
    "quantizeInt8",
    "maxBodyBytes",
    "description",
    "tags",
    "properties",
    "sslEnabled",
    "sslCertificate",
    "sslKey",
    "sslCname",
}
TLS_FILE_KEYS = ("sslCertificate", "sslKey")
MAX_PEM_BYTES = 256 * 1024
# A DNS name (labels of letters, digits, hyphens; a leading "*." wildcard allowed), as a certificate SAN holds.
_DNS_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"(\*\.)?({_DNS_LABEL}\.)*{_DNS_LABEL}")
RESOURCE_KEYS = {"cpu", "memoryInGB"}
# Every target kind the familiar tooling names deploys to Edgeport devices.
COMPUTE_TYPES = {"edge", "device", "local", "aci", "aks"}
DEFAULT_HEALTH_TIMEOUT_S = 60


def _check_keys(where: str, data: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BadInput(f"{where}: expected a JSON object, got {type(data).__name__}")
    for key in data:
        if key not in allowed:
            raise BadInput(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")
    return data


def _typed(where: str, key: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    # bool is an int in Python; refuse it where a number is meant.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise BadInput(f"{where}: {key} must be {_kind_name(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise BadInput(f"{where}: {key} must be {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
                        "dict": "an object", "list": "a list"}.get(k.__name__, k.__name__) for k in kinds)


def _str_map(where: str, key: str, value: Any) -> dict[str, str]:
    _typed(where, key, value, dict)
    for k, v in value.items():
        if not isinstance(v, str | int | float) or isinstance(v, bool):
            raise BadInput(f"{where}: {key}.{k} must be a string")
    return {str(k): str(v) for k, v in value.items()}


@dataclass
class DeploymentConfig:
    """Validated deployment config (resources, port, auth, runtime tuning)."""

    compute_type: str = "edge"
    cpu: float = 0.0
    memory_gb: float = 0.0
    port: int = 0
    auth_enabled: bool = False
    token_auth_enabled: bool = False
    health_timeout_s: int = DEFAULT_HEALTH_TIMEOUT_S
    max_batch_size: int = 0
    max_batch_delay_ms: int = 0
    execution_providers: list[str] = field(default_factory=list)
    quantize_int8: bool = False
    max_body_bytes: int = 0
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    ssl_enabled: bool = False
    ssl_certificate: str = ""  # PEM text (the client read the file)
    ssl_key: str = ""  # PEM text
    ssl_cname: str = ""

    @property
    def auth_mode(self) -> str:
        """none | key | token."""
        return "token" if self.token_auth_enabled else "key" if self.auth_enabled else "none"


def parse_deployment_config(data: Any, where: str = "deployment config") -> DeploymentConfig:
    """Validate a deployment-config dict; raise BadInput naming the bad key."""
    _check_keys(where, data, DEPLOYMENT_KEYS)
    dc = DeploymentConfig()
    if "computeType" in data:
        ct = str(_typed(where, "computeType", data["computeType"], str)).lower()
        if ct not in COMPUTE_TYPES:
            raise BadInput(f"{where}: computeType {data['computeType']!r} is not one of {sorted(COMPUTE_TYPES)}")
        dc.compute_type = ct
    res = _check_keys(f"{where}: containerResourceRequirements", data.get("containerResourceRequirements", {}),
                      RESOURCE_KEYS)
    for key, attr in (("cpu", "cpu"), ("memoryInGB", "memory_gb")):
        if key in res:
            value = _typed(where, f"containerResourceRequirements.{key}", res[key], (int, float))
            if value <= 0:
                raise BadInput(f"{where}: containerResourceRequirements.{key} must be positive, got {value}")
            setattr(dc, attr, float(value))
    if "port" in data:
        port = _typed(where, "port", data["port"], int)
        if not 0 <= port <= 65535:
            raise BadInput(f"{where}: port must be 0 (agent picks) or 1-65535, got {port}")
        dc.port = port
    for key, attr in (("authEnabled", "auth_enabled"), ("tokenAuthEnabled", "token_auth_enabled"),
                      ("quantizeInt8", "quantize_int8")):
        if key in data:
            setattr(dc, attr, _typed(where, key, data[key], bool))
    if dc.auth_enabled and dc.token_auth_enabled:
        raise BadInput(f"{where}: authEnabled and tokenAuthEnabled cannot both be true")
    for key, attr, low in (("healthTimeoutSeconds", "health_timeout_s", 1), ("maxBatchSize", "max_batch_size", 0),
                           ("maxBatchDelayMs", "max_batch_delay_ms", 0), ("maxBodyBytes", "max_body_bytes", 0)):
        if key in data:
            value = _typed(where, key, data[key], int)
            if value < low:
                raise BadInput(f"{where}: {key} must be >= {low}, got {value}")
            setattr(dc, attr, value)
    if "executionProviders" in data:
        eps = _typed(where, "executionProviders", data["executionProviders"], list)
        if not all(isinstance(p, str) and p for p in eps):
            raise BadInput(f"{where}: executionProviders must be a list of provider names")
        dc.execution_providers = list(eps)
    if "description" in data:
        dc.description = _typed(where, "description", data["description"], str)
    for key in ("tags", "properties"):
        if key in data:
            setattr(dc, key, _str_map(where, key, data[key]))
    _parse_tls(data, where, dc)
    return dc


def _parse_tls(data: dict[str, Any], where: str, dc: DeploymentConfig) -> None:
    """sslEnabled, sslCertificate + sslKey (PEM text here: a pair that belongs together), sslCname."""
    if "sslEnabled" in data:
        dc.ssl_enabled = _typed(where, "sslEnabled", data["sslEnabled"], bool)
    if "sslCname" in data:
        cname = _typed(where, "sslCname", data["sslCname"], str).strip().rstrip(".")
        if cname and (len(cname) > 253 or not _DNS_NAME.fullmatch(cname)):
            raise BadInput(f"{where}: sslCname {data['sslCname']!r} is not a DNS name")
        dc.ssl_cname = cname
    given = [k for k in TLS_FILE_KEYS if data.get(k)]
    if not given:
        return
    if len(given) == 1:
        missing = "sslKey" if given[0] == "sslCertificate" else "sslCertificate"
        raise BadInput(f"{where}: {given[0]} is given without {missing}: give both, or neither (the hub issues one)")
    if not dc.ssl_enabled:
        raise BadInput(f"{where}: sslCertificate and sslKey need \"sslEnabled\": true")
    cert = _typed(where, "sslCertificate", data["sslCertificate"], str)
    key = _typed(where, "sslKey", data["sslKey"], str)
    check_tls_pair(cert, key, where)
    dc.ssl_certificate, dc.ssl_key = cert, key


def check_tls_pair(cert_pem: str, key_pem: str, where: str) -> None:
    """BadInput naming the field unless `cert_pem` is a PEM certificate (chain) and `key_pem` its private key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        certs = x509.load_pem_x509_certificates(cert_pem.encode())
    except ValueError:
        raise BadInput(f"{where}: sslCertificate is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except TypeError:
        raise BadInput(f"{where}: sslKey is encrypted; give an unencrypted PEM key") from None
    except ValueError:
        raise BadInput(f"{where}: sslKey is not a PEM private key") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    key_spki = key.public_key().public_bytes(serialization.Encoding.DER, pub)
    if certs[0].public_key().public_bytes(serialization.Encoding.DER, pub) != key_spki:
        raise BadInput(f"{where}: sslKey does not belong to sslCertificate (their public keys differ)")


def resolve_tls_files(data: Any, base_dir: Path, where: str = "deployment config") -> Any:
    """`data` with sslCertificate/sslKey file paths (relative to `base_dir`) replaced by the files' PEM text.

    What the CLI and SDK send the hub; text that already is PEM is kept. BadInput names the field and file.
    """
    if not isinstance(data, dict) or not any(isinstance(data.get(k), str) and data.get(k) for k in TLS_FILE_KEYS):
        return data
    out = dict(data)
    for key in TLS_FILE_KEYS:
        value = out.get(key)
        if value is None or value == "" or (isinstance(value, str) and value.lstrip().startswith("-----BEGIN")):
            continue
        path = Path(base_dir) / _typed(where, key, value, str)
        try:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_PEM_BYTES + 1)
        except OSError as exc:
            raise BadInput(f"{where}: {key} file {path} cannot be read: {exc.strerror or exc}") from None
        if len(raw) > MAX_PEM_BYTES:
            raise BadInput(f"{where}: {key} file {path} is over {MAX_PEM_BYTES // 1024} KiB: not a PEM file")
        try:
            out[key] = raw.decode("ascii")
        except UnicodeDecodeError:
            raise BadInput(f"{where}: {key} file {path} is not PEM text") from None
    return out


@dataclass
class InferenceConfig:
    """Validated inference config, paths resolved on the client's disk."""

    entry_script: str | None = None  # relative to source_directory
    source_directory: Path | None = None
    requirements: list[str] = field(default_factory=list)
    environment_variables: dict[str, str] = field(default_factory=dict)
    description: str = ""


def parse_inference_config(data: Any, base_dir: Path, where: str = "inference config") -> InferenceConfig:
    """Validate an inference-config dict; relative paths resolve against `base_dir`."""
    _check_keys(where, data, INFERENCE_KEYS)
    runtime = data.get("runtime", "python")
    if not isinstance(runtime, str) or runtime.lower() != "python":
        raise BadInput(f"{where}: runtime {runtime!r} is not supported (only 'python')")
    if "condaFile" in data and "requirements" in data:
        raise BadInput(f"{where}: give condaFile or requirements, not both")
    ic = InferenceConfig()
    if "enableGpu" in data:
        _typed(where, "enableGpu", data["enableGpu"], bool)  # the agent picks providers per hardware
    source = data.get("sourceDirectory")
    src_dir = Path(base_dir) / _typed(where, "sourceDirectory", source, str) if source is not None else Path(base_dir)
    entry = data.get("entryScript")
    if entry is None:
        raise BadInput(f"{where}: entryScript is required (a no-code ONNX deployment needs no inference config)")
    _typed(where, "entryScript", entry, str)
    if not src_dir.is_dir():
        raise BadInput(f"{where}: sourceDirectory {src_dir} is not a folder")
    script = src_dir / entry
    if not script.is_file():
        raise BadInput(f"{where}: entryScript {entry!r} not found in {src_dir}")
    if script.resolve().is_relative_to(src_dir.resolve()) is False:
        raise BadInput(f"{where}: entryScript {entry!r} must be inside sourceDirectory {src_dir}")
    ic.entry_script = Path(entry).as_posix()
    ic.source_directory = src_dir
    if "condaFile" in data:
        conda = src_dir / _typed(where, "condaFile", data["condaFile"], str)
        ic.requirements = requirements_from_conda(conda, where)
    elif "requirements" in data:
        req = data["requirements"]
        if isinstance(req, str):
            path = src_dir / req
            if not path.is_file():
                raise BadInput(f"{where}: requirements file {path} not found")
            ic.requirements = _requirement_lines(path.read_text())
        elif isinstance(req, list) and all(isinstance(r, str) for r in req):
            ic.requirements = [r.strip() for r in req if r.strip()]
        else:
            raise BadInput(f"{where}: requirements must be a list of pip requirements or a file name")
    if "environmentVariables" in data:
        ic.environment_variables = _str_map(where, "environmentVariables", data["environmentVariables"])
    if "description" in data:
        ic.description = _typed(where, "description", data["description"], str)
    return ic


def _requirement_lines(text: str) -> list[str]:
    return [ln.split("#", 1)[0].strip() for ln in text.splitlines() if ln.split("#", 1)[0].strip()]


def requirements_from_conda(path: Path, where: str = "inference config") -> list[str]:
    """Pip requirements from a conda environment file: its `pip:` list plus plain packages (`a=1` -> `a==1`)."""
    import yaml

    if not path.is_file():
        raise BadInput(f"{where}: condaFile {path} not found")
    try:
        env = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise BadInput(f"{where}: condaFile {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    deps = env.get("dependencies", []) if isinstance(env, dict) else None
    if not isinstance(deps, list):
        raise BadInput(f"{where}: condaFile {path} has no dependencies list")
    out: list[str] = []
    for dep in deps:
        if isinstance(dep, dict):
            out += [str(p).strip() for p in dep.get("pip", []) if str(p).strip()]
        elif isinstance(dep, str):
            name = re.split(r"[=<>! ]", dep, maxsplit=1)[0]
            if name in ("python", "pip") or not name:
                continue  # the agent's interpreter and pip are given
            out.append(re.sub(r"(?<![=<>!])=(?!=)", "==", dep.replace(" ", "")))
    return out


def environment_digest(requirements: list[str]) -> str:
    """The environment cache key: sha256 of the sorted, normalized requirements ('' when none)."""
    if not requirements:
        return ""
    norm = sorted({r.strip() for r in requirements if r.strip()})
    return "sha256:" + hashlib.sha256("\n".join(norm).encode()).hexdigest()


def load_json_file(path: Path, what: str) -> Any:
    """Read a JSON config file; BadInput with the file and line on failure."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BadInput(f"{what} {path} not found") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"{what} {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
