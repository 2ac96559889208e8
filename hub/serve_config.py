"""What `hub serve` is told to do: typed, validated settings for the hub and its agent channels.

Pure data and checks, no server imports: the command line builds and checks a `HubConfig`
before anything heavy loads, and the composition root (`hub.server.build_hub`) builds every
service and component from it.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from pathlib import Path

from hub.errors import BadInput

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7070
DEFAULT_GRPC_PORT = 7071
DEFAULT_HEARTBEAT_INTERVAL_S = 10
DEFAULT_TELEMETRY_INTERVAL_S = 60
DEFAULT_TELEMETRY_RETENTION_S = 7 * 86400
# Reconnections a hub takes per second after a restart (TLS handshake and Hello each): a 2-core hub took
# 340-540 mutual-TLS connections/s (benchmarks/grpc_streams.py, benchmarks/fleet.py). The agents' Welcome
# asks them to spread a reconnect over fleet size / this, so 10,000 come back over 20 s, not in one burst.
DEFAULT_RECONNECTS_PER_S = 500.0
DEFAULT_BLOB_GRACE_S = 3600
DEFAULT_BLOB_GC_INTERVAL_S = 600
DEFAULT_AUDIT_RETENTION_S = 90 * 86400

# Listen addresses that mean "every interface": agents cannot dial them, so the hub advertises its host name.
UNSPECIFIED_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})


def is_unspecified_host(host: str) -> bool:
    """Whether `host` is a bind-to-all address rather than one a client can reach."""
    return host in UNSPECIFIED_HOSTS


def is_loopback_host(host: str) -> bool:
    """Whether `host` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def advertised_host(host: str) -> str:
    """The address agents should dial: the listen address, or this host's name when listening on all."""
    return socket.gethostname() if is_unspecified_host(host) else host


def _check_port(option: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise BadInput(f"{option} must be 0 (any free port) or 1-65535, got {port}")


@dataclass(frozen=True)
class AgentChannelConfig:
    """How the hub talks to agents: the gRPC port and the pace it asks agents to keep."""

    grpc_port: int = DEFAULT_GRPC_PORT
    # Development only, one meaning everywhere: no transport security. Plain-text gRPC (devices named in
    # metadata), plain HTTP on a network address, plain MQTT to a broker off this machine.
    insecure: bool = False
    heartbeat_interval_s: int = DEFAULT_HEARTBEAT_INTERVAL_S
    telemetry_interval_s: int = DEFAULT_TELEMETRY_INTERVAL_S
    reconnects_per_s: float = DEFAULT_RECONNECTS_PER_S
    telemetry_retention_s: int = DEFAULT_TELEMETRY_RETENTION_S
    artifact_url: str | None = None  # OCI base handed to agents; None: this hub's own address

    def __post_init__(self) -> None:
        _check_port("--grpc-port", self.grpc_port)
        for option, value in (
            ("--heartbeat-interval", self.heartbeat_interval_s),
            ("--telemetry-interval", self.telemetry_interval_s),
        ):
            if not 1 <= value <= 3600:
                raise BadInput(f"{option} must be 1-3600 seconds, got {value}")
        if not 1 <= self.reconnects_per_s <= 1_000_000:  # NaN fails every comparison, so it is refused too
            raise BadInput(
                f"--reconnect-rate must be 1-1000000 reconnections per second, got {self.reconnects_per_s:g}"
            )
        if self.telemetry_retention_s <= 0:
            raise BadInput(f"--telemetry-retention must be positive, got {self.telemetry_retention_s} s")
        if self.artifact_url is not None and not self.artifact_url.startswith(("http://", "https://")):
            raise BadInput(f"--artifact-url {self.artifact_url!r}: expected http://HOST:PORT or https://...")


@dataclass(frozen=True)
class MqttConfig:
    """The MQTT bridge: which broker, where its credential files live, the topic prefix."""

    url: str
    directory: Path | None = None  # None: DATA_DIR/mqtt
    prefix: str | None = None  # None: the protocol's default prefix
    advertise: str | None = None  # broker URL given to devices; None: `url`
    run_broker: bool = False


@dataclass(frozen=True)
class BlobGcConfig:
    """When the hub collects blobs nothing references: how often, and how long a blob is spared first."""

    # Longer than the slowest folder upload: its blobs are named by a version only when it registers.
    grace_s: int = DEFAULT_BLOB_GRACE_S
    interval_s: int = DEFAULT_BLOB_GC_INTERVAL_S  # 0: never on a timer (POST /api/v1/blobs/gc still runs it)

    def __post_init__(self) -> None:
        if self.grace_s < 0 or self.interval_s < 0:
            raise BadInput(f"--blob-grace and --blob-gc-interval must not be negative, got {self}")


@dataclass(frozen=True)
class HubConfig:
    """Everything `hub serve` needs: where state lives, where to listen, and the agent channels."""

    data_dir: Path
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    access_log: bool = False
    agents: AgentChannelConfig = field(default_factory=AgentChannelConfig)
    mqtt: MqttConfig | None = None
    blob_gc: BlobGcConfig = field(default_factory=BlobGcConfig)
    audit_retention_s: int = DEFAULT_AUDIT_RETENTION_S  # how long audit records are kept
    tls_sans: tuple[str, ...] = ()  # extra names in the hub-issued HTTPS certificate
    tls_cert: Path | None = None  # the user's own certificate (PEM, chain included) and key for HTTPS
    tls_key: Path | None = None

    def __post_init__(self) -> None:
        _check_port("--port", self.port)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise BadInput("--tls-cert and --tls-key go together: give both, or neither for a hub-issued certificate")
        if self.tls_cert is not None and self.agents.insecure:
            raise BadInput("--tls-cert asks for HTTPS, --insecure for plain HTTP: give one of them")
        for option, path in (("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key)):
            if path is not None and not path.is_file():
                raise BadInput(f"{option} {path}: no such file")
        for name in self.tls_sans:
            if not name or any(c in name for c in " /,") or name in UNSPECIFIED_HOSTS:
                raise BadInput(f"--tls-san {name!r}: expected a host name or an IP address")

    @property
    def https(self) -> bool:
        """Whether the REST/OCI port serves HTTPS: on a network address unless --insecure, or when a
        certificate (own, or names for the hub-issued one) was asked for. Loopback stays plain HTTP."""
        if self.tls_cert is not None or self.tls_sans:
            return True
        return not is_loopback_host(self.host) and not self.agents.insecure

    @property
    def plain_on_network(self) -> bool:
        """Plain HTTP on an address other machines reach (--insecure): warned about at every start."""
        return not self.https and not is_loopback_host(self.host)
