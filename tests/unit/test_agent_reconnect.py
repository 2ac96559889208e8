"""After a session ends the agent waits a short pause plus a random share of the spread the hub named in its
Welcome, so a fleet that loses its hub at once does not come back in one burst of handshakes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.outbox import Outbox
from agent.session import MIN_RECONNECT_SPREAD_S, RECONNECT_PAUSE_S, HubSession, reconnect_pause
from agent.state import AgentState
from protos.edgeport.v1 import agent_pb2


def test_the_pause_is_a_share_of_the_hubs_spread_and_never_shorter_than_its_floor() -> None:
    assert reconnect_pause(20.0, 0.0) == RECONNECT_PAUSE_S
    assert reconnect_pause(20.0, 0.5) == pytest.approx(RECONNECT_PAUSE_S + 10.0)
    assert reconnect_pause(20.0, 0.999) == pytest.approx(RECONNECT_PAUSE_S + 19.98)
    # A hub that names no spread (an older hub, a handful of devices) still gets a jittered second.
    assert reconnect_pause(0.0, 0.5) == pytest.approx(RECONNECT_PAUSE_S + 0.5 * MIN_RECONNECT_SPREAD_S)
    assert reconnect_pause(0.2, 0.999) == pytest.approx(RECONNECT_PAUSE_S + 0.999 * MIN_RECONNECT_SPREAD_S)


class _EndingLink:
    """A link whose hub welcomes the agent with a reconnect spread, then ends the session at once."""

    def __init__(self, spread_ms: int) -> None:
        self.spread_ms = spread_ms

    async def open(self, hello: agent_pb2.Hello) -> agent_pb2.Welcome:
        return agent_pb2.Welcome(device_id="dev-1", reconnect_spread_ms=self.spread_ms)

    async def send(self, message: agent_pb2.AgentMessage) -> None:
        pass

    async def incoming(self) -> AsyncIterator[agent_pb2.HubMessage]:
        for _ in ():
            yield agent_pb2.HubMessage()

    async def close(self) -> None:
        pass


def test_the_welcomes_spread_decides_the_wait_after_a_session_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spreads: list[float] = []
    shares: list[float] = []

    def pause(spread_s: float, share: float) -> float:
        spreads.append(spread_s)
        shares.append(share)
        raise asyncio.CancelledError  # one session is enough

    monkeypatch.setattr("agent.session.reconnect_pause", pause)

    async def scenario(spread_ms: int) -> None:
        state = AgentState(tmp_path / str(spread_ms))
        session = HubSession(
            lambda: _EndingLink(spread_ms),  # type: ignore[arg-type, return-value]
            lambda: agent_pb2.Hello(device_id="dev-1"),
            Outbox(state),
            asyncio.Event(),
            lambda message: None,
            say=lambda line: None,
            device_id="dev-1",
        )
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await session.run()
        finally:
            state.close()

    asyncio.run(scenario(20_000))
    asyncio.run(scenario(0))
    assert spreads == [20.0, 0.0]
    assert all(0 <= share < 1 for share in shares)
