"""The gRPC Link: one `AgentService.Connect` bidirectional stream to the hub.

Mutual TLS by default: the channel trusts only the hub CA pinned at enrollment and presents
the device certificate (the hub knows the device by its CN). With `insecure=True` the channel
is plain text and the device names itself in `x-edgeport-device`, proven by the credential
issued at enrollment in `x-edgeport-credential` (development only).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from grpc import aio

from agent.link.base import LinkClosed
from agent.state import Identity
from protos.edgeport.v1 import agent_pb2, agent_pb2_grpc

# From dialing to the hub's Welcome. Generous because giving up costs more than waiting: when a whole fleet
# (re)connects at once the hub works through thousands of TLS handshakes and Hellos, and an agent that
# gives up and retries makes it do its handshake twice (5,000 agents, 15 s: 12,000 attempts, 50 s).
OPEN_TIMEOUT_S = 60.0
# Keepalives keep NAT mappings open and notice a silently dead network (pulled cables) within ~40 s; the
# answer may take grpc's default 20 s, as a hub that a whole fleet reconnects to is slow to reply (see the
# hub's SERVER_OPTIONS).
_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # TLS records of at most 4 KiB: grpc keeps a buffer this size per connection (a simulated fleet holds
    # thousands of connections in one process) and agent messages are small.
    ("grpc.tsi.max_frame_size", 4096),
    # No BDP pings after each quiet spell (see the hub's SERVER_OPTIONS): ~30% less CPU per round trip here.
    ("grpc.http2.bdp_probe", 0),
]


def _describe(exc: grpc.RpcError) -> str:
    code = exc.code() if isinstance(exc, aio.AioRpcError) else None
    details = exc.details() if isinstance(exc, aio.AioRpcError) else str(exc)
    return f"{code.name if code else 'ERROR'}: {details}"


class GrpcLink:
    """One session over gRPC (implements agent.link.base.Link)."""

    def __init__(self, identity: Identity, identity_dir: Path, *, insecure: bool = False) -> None:
        self.identity = identity
        self.identity_dir = Path(identity_dir)
        self.insecure = insecure
        self._channel: aio.Channel | None = None
        self._call: aio.StreamStreamCall | None = None
        self._write_lock = asyncio.Lock()  # one write at a time on a gRPC stream (sender and heartbeats share it)
        self.refused = False  # the hub rejected our credentials (revoked, unknown): reconnecting will not help

    def _make_channel(self) -> aio.Channel:
        target = self.identity.grpc_address
        if self.insecure:
            return aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        try:
            creds = grpc.ssl_channel_credentials(
                root_certificates=(self.identity_dir / "ca.crt").read_bytes(),
                private_key=(self.identity_dir / "device.key").read_bytes(),
                certificate_chain=(self.identity_dir / "device.crt").read_bytes(),
            )
        except OSError as exc:
            self.refused = True  # without its key and certificates this agent cannot prove who it is
            raise LinkClosed(f"device identity files missing in {self.identity_dir}: {exc.strerror}") from None
        return aio.secure_channel(target, creds, options=_CHANNEL_OPTIONS)

    async def open(self, hello: agent_pb2.Hello) -> agent_pb2.Welcome:
        """Connect, send `hello`, and return the hub's Welcome. Raises LinkClosed on failure."""
        self._channel = self._make_channel()  # may raise LinkClosed (identity files gone)
        metadata: list[tuple[str, str]] = []
        if self.insecure:
            metadata = [
                ("x-edgeport-device", self.identity.device_id),
                ("x-edgeport-credential", self.identity.credential),
            ]
        stub = agent_pb2_grpc.AgentServiceStub(self._channel)
        try:
            # Not wait_for_ready: a hub that refuses connections (down, restarting) fails the call at once,
            # and the daemon's backoff decides when to try again.
            self._call = stub.Connect(metadata=metadata, wait_for_ready=False)
            first = await asyncio.wait_for(self._hello(self._call, hello), OPEN_TIMEOUT_S)
        except grpc.RpcError as exc:
            await self.close()
            if isinstance(exc, aio.AioRpcError) and exc.code() in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
            ):
                self.refused = True
            raise LinkClosed(f"gRPC {self.identity.grpc_address}: {_describe(exc)}") from None
        except TimeoutError:
            await self.close()
            raise LinkClosed(f"gRPC {self.identity.grpc_address}: no Welcome within {OPEN_TIMEOUT_S:g}s") from None
        except asyncio.InvalidStateError:  # grpc.aio's "RPC already finished": the hub ended it (shutting down)
            await self.close()
            raise LinkClosed(f"gRPC {self.identity.grpc_address}: the hub ended the call before the Hello") from None
        if first is None or not first.HasField("welcome"):
            await self.close()
            raise LinkClosed(f"gRPC {self.identity.grpc_address}: the hub did not answer Hello with a Welcome")
        return first.welcome

    @staticmethod
    async def _hello(call: aio.StreamStreamCall, hello: agent_pb2.Hello) -> agent_pb2.HubMessage | None:
        """Send Hello; the hub's first message, or None when it ended the stream first."""
        await call.write(agent_pb2.AgentMessage(seq=0, hello=hello))
        first = await call.read()
        return None if first is aio.EOF else first

    async def send(self, message: agent_pb2.AgentMessage) -> None:
        """Send one message; raises LinkClosed when the session is gone."""
        if self._call is None:
            raise LinkClosed("link is not open")
        try:
            async with self._write_lock:
                await self._call.write(message)
        except (grpc.RpcError, aio.UsageError) as exc:
            raise LinkClosed(f"gRPC send failed: {exc}") from None
        except asyncio.InvalidStateError:
            # grpc.aio raises this, not an RpcError, when the call ended before the write: a hub restart
            # caught an agent between its last read and a write (it stopped that agent, 1 in 5,000).
            raise LinkClosed("gRPC send failed: the hub ended the stream") from None

    async def incoming(self) -> AsyncIterator[agent_pb2.HubMessage]:
        """HubMessages as they arrive; raises LinkClosed when the stream ends."""
        if self._call is None:
            raise LinkClosed("link is not open")
        while True:
            try:
                message = await self._call.read()
            except grpc.RpcError as exc:
                if isinstance(exc, aio.AioRpcError) and exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                    self.refused = True
                raise LinkClosed(f"gRPC stream ended: {_describe(exc)}") from None
            if message is aio.EOF:
                raise LinkClosed("gRPC stream closed by the hub")
            yield message

    async def close(self) -> None:
        """End the session; idempotent."""
        call, channel = self._call, self._channel
        self._call, self._channel = None, None
        if call is not None:
            call.cancel()
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close()
