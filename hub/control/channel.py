"""`AgentChannel`: the `hub serve` component that runs the agents' gRPC front.

Once its port is bound it tells fleet (the address in EnrollResponse) and deployments (the
OCI base in every manifest) where agents reach this hub: only then are both known.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hub.control.grpc_front import GrpcFront
from hub.serve_config import advertised_host

if TYPE_CHECKING:
    from hub.services import HubServices


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
        api_scheme: str = "http",
    ) -> None:
        self.services = services
        self.front = GrpcFront(services.control, services.fleet.ca, host=host, port=grpc_port, insecure=insecure)
        self.host = host
        self.api_port = api_port
        self.insecure = insecure
        self.artifact_url = artifact_url
        self.api_scheme = api_scheme  # https when the API port serves TLS: agents pull from it that way
        self.url = ""

    async def start(self) -> None:
        """Bind the gRPC port, then advertise it (EnrollResponse) and the OCI base (manifests)."""
        port = await self.front.start()
        public = advertised_host(self.host)
        self.services.fleet.grpc_address = f"{public}:{port}"
        self.services.deployments.registry_url = self.artifact_url or f"{self.api_scheme}://{public}:{self.api_port}"
        self.url = f"agents gRPC {public}:{port} ({'insecure' if self.insecure else 'mutual TLS'})"

    async def stop(self) -> None:
        """Close every agent stream and the port."""
        await self.front.stop()
