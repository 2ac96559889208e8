"""The gRPC link turns every way a hub can end a call into LinkClosed, which the daemon answers by reconnecting.

grpc.aio raises asyncio.InvalidStateError ("RPC already finished"), not an RpcError, for a write to a call
that has ended; a hub restart once caught an agent there and stopped it (1 agent in 5,000).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.link.base import LinkClosed
from agent.link.grpc import GrpcLink
from agent.state import Identity
from protos.edgeport.v1 import agent_pb2

IDENTITY = Identity("dev-1", "127.0.0.1:1", "127.0.0.1:1", "00")


class _FinishedCall:
    """What grpc.aio's stream-stream call does once the RPC has ended."""

    async def write(self, message: agent_pb2.AgentMessage) -> None:
        raise asyncio.InvalidStateError("RPC already finished.")

    def cancel(self) -> bool:
        return False


def test_a_send_on_a_call_the_hub_ended_is_a_closed_link(tmp_path: Path) -> None:
    async def scenario() -> None:
        link = GrpcLink(IDENTITY, tmp_path, insecure=True)
        link._call = _FinishedCall()  # type: ignore[assignment]
        with pytest.raises(LinkClosed, match="the hub ended the stream"):
            await link.send(agent_pb2.AgentMessage(seq=1))
        assert not link.refused  # worth reconnecting

    asyncio.run(scenario())


def test_a_call_the_hub_ends_before_the_hello_is_a_closed_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def finished(call: object, hello: agent_pb2.Hello) -> None:
        raise asyncio.InvalidStateError("RPC already finished.")

    monkeypatch.setattr(GrpcLink, "_hello", staticmethod(finished))

    async def scenario() -> None:
        link = GrpcLink(IDENTITY, tmp_path, insecure=True)
        with pytest.raises(LinkClosed, match="the hub ended the call before the Hello"):
            await link.open(agent_pb2.Hello(device_id="dev-1"))
        assert link._call is None and link._channel is None and not link.refused  # closed, worth retrying

    asyncio.run(scenario())
