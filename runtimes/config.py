"""Everything `python -m runtimes serve` was told, in one typed value."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ServeConfig:
    """Options of one runtime process (keys and secrets come from the environment, not here)."""

    model_dir: Path
    entry_script: Path | None = None
    source_dir: Path | None = None
    onnx: Path | None = None
    name: str = "model"
    model_version: str = "1"
    host: str = "127.0.0.1"
    port: int = 5001
    grpc_port: int | None = 5002
    auth: str = "none"
    max_batch_size: int = 0
    max_batch_delay_ms: float = 5.0
    cpus: float | None = None
    execution_providers: list[str] = field(default_factory=list)
    strict_providers: bool = False  # fail at start instead of falling back to other providers
    quantize_int8: bool = False
    max_body_bytes: int = 100 * 2**20
    header_timeout: float = 15.0
    idle_timeout: float = 60.0
    max_connections: int = 1024
    # HTTPS on the HTTP port and TLS on the gRPC port, both with this certificate (PEM files)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    inline_max_ms: float = 0.5
    # ONNX calls that may run at once and the session's intra-op threads (None: one per usable CPU,
    # and all usable CPUs; see tuning.Concurrency). Entry scripts always run one call at a time.
    model_workers: int | None = None
    intra_op_threads: int | None = None

    @property
    def max_json_objects_bytes(self) -> int:
        """What the Python objects of one parsed JSON body may cost: twice --max-body-bytes, at least 64 MiB."""
        return max(64 << 20, 2 * self.max_body_bytes)
