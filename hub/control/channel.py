"""The `hub serve` component for the agents' gRPC channel (room 1's component hook calls `agent_channel`)."""

from __future__ import annotations

import argparse
import socket
from typing import TYPE_CHECKING

from hub.control.core import DEFAULT_RECONNECTS_PER_S
from hub.control.grpc_front import GrpcFront
from hub.errors import BadInput
from hub.names import parse_duration

if TYPE_CHECKING:
    from hub.services import HubServices

DEFAULT_GRPC_PORT = 7071


def advertised_host(host: str) -> str:
    """The address agents should dial: the listen address, or this host's name when listening on all."""
    return socket.gethostname() if host in ("", "0.0.0.0", "::") else host


class AgentChannel:
    """Starts the gRPC front and tells fleet and deployments which addresses to hand to agents."""

    def __init__(
        self,
        services: HubServices,
        *,
        host: str,
        api_port: int,
        grpc_port: int,
        insecure: bool,
        artifact_url: str | None = None,
    ) -> None:
        self.services = services
        self.front = GrpcFront(services.control, services.fleet.ca, host=host, port=grpc_port, insecure=insecure)
        self.host = host
        self.api_port = api_port
        self.insecure = insecure
        self.artifact_url = artifact_url
        self.url = ""

    async def start(self) -> None:
        """Bind the gRPC port, then advertise it (EnrollResponse) and the OCI base (manifests)."""
        port = await self.front.start()
        public = advertised_host(self.host)
        self.services.fleet.grpc_address = f"{public}:{port}"
        self.services.deployments.registry_url = self.artifact_url or f"http://{public}:{self.api_port}"
        self.url = f"agents gRPC {public}:{port} ({'insecure' if self.insecure else 'mutual TLS'})"

    async def stop(self) -> None:
        """Close every agent stream and the port."""
        await self.front.stop()


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    """`--grpc-port` and `--insecure` for `hub serve`."""
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=DEFAULT_GRPC_PORT,
        help=f"port of the agents' gRPC channel (default {DEFAULT_GRPC_PORT}; 0 = any free)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="development only: plain-text gRPC, devices named in metadata (agents need --insecure)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=int,
        default=10,
        metavar="SECONDS",
        help="how long an agent may send nothing before it sends a heartbeat (default 10)",
    )
    parser.add_argument(
        "--telemetry-interval",
        type=int,
        default=60,
        metavar="SECONDS",
        help="how often agents send runtime and system figures (default 60, the usual monitoring interval; "
        "10,000 agents at 15 s kept a hub busy with 667 messages/s)",
    )
    parser.add_argument(
        "--reconnect-rate",
        type=float,
        default=DEFAULT_RECONNECTS_PER_S,
        metavar="PER_SECOND",
        help="reconnections this hub takes per second (TLS handshake and Hello each; default "
        f"{DEFAULT_RECONNECTS_PER_S:.0f}, what a 2-core hub managed). Agents that lose the hub spread their "
        "reconnects over enrolled devices / this (at most 120 s), so a restart does not bring the whole fleet "
        "back in one burst",
    )
    parser.add_argument(
        "--telemetry-retention",
        default="7d",
        metavar="DURATION",
        help="how long telemetry is kept: 12h, 7d, ... (default 7d)",
    )
    parser.add_argument(
        "--artifact-url",
        metavar="URL",
        help="OCI base URL agents pull artifacts from, when a mirror or CDN fronts this hub's /v2/ "
        "(default: this hub's own address)",
    )


def agent_channel(services: HubServices, args: argparse.Namespace) -> AgentChannel | None:
    """Component factory for `hub serve`."""
    if services.control is None:
        return None
    artifact_url = getattr(args, "artifact_url", None)
    if artifact_url and not artifact_url.startswith(("http://", "https://")):
        raise BadInput(f"--artifact-url {artifact_url!r}: expected http://HOST:PORT or https://...")
    for flag in ("heartbeat_interval", "telemetry_interval"):
        value = getattr(args, flag, 10)
        if not 1 <= value <= 3600:
            raise BadInput(f"--{flag.replace('_', '-')} must be 1-3600 seconds, got {value}")
    services.control.heartbeat_interval_s = getattr(args, "heartbeat_interval", 10)
    services.control.telemetry_interval_s = getattr(args, "telemetry_interval", 60)
    rate = getattr(args, "reconnect_rate", DEFAULT_RECONNECTS_PER_S)
    if not 1 <= rate <= 1_000_000:
        raise BadInput(f"--reconnect-rate must be 1-1000000 reconnections per second, got {rate:g}")
    services.control.reconnects_per_s = rate
    services.telemetry.retention_s = parse_duration(getattr(args, "telemetry_retention", "7d"))
    return AgentChannel(
        services,
        host=args.host,
        api_port=args.port,
        grpc_port=getattr(args, "grpc_port", DEFAULT_GRPC_PORT),
        insecure=getattr(args, "insecure", False),
        artifact_url=getattr(args, "artifact_url", None),
    )
