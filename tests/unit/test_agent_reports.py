"""The daemon's path from reconciler statuses and hub Acks to the outbox: progress statuses linger (longer
while progress lasts) and are replaced by newer ones, settled ones go at once, a desired state's ack rides on
the statuses it causes, a burst of Acks is applied once, periodic reports start at a random phase."""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from agent.daemon import MAX_STATUS_LINGER_S, AgentConfig, AgentDaemon
from agent.outbox import Outbox
from agent.state import AgentState
from protos.edgeport.v1 import agent_pb2


def _daemon(tmp_path: Path, linger: float) -> AgentDaemon:
    daemon = AgentDaemon(AgentConfig(hub="127.0.0.1:1", data_dir=tmp_path, status_linger_s=linger))
    daemon.parts.say = lambda line: None
    daemon.state = AgentState(tmp_path)
    daemon.outbox = Outbox(daemon.state)
    return daemon


def _st(service: str, phase: int, message: str = "") -> agent_pb2.DeploymentStatus:
    return agent_pb2.DeploymentStatus(service=service, generation=1, phase=phase, message=message)


def _sent(daemon: AgentDaemon) -> list[tuple[str, str]]:
    assert daemon.outbox is not None
    return [(m.status.service, agent_pb2.Phase.Name(m.status.phase)) for m in daemon.outbox.pending()]


def test_progress_statuses_superseded_within_the_linger_are_not_sent(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = _daemon(tmp_path, linger=30.0)
        for phase in (agent_pb2.PENDING, agent_pb2.PULLING, agent_pb2.STARTING):
            daemon._report(_st("a", phase))
        daemon._report(_st("b", agent_pb2.PULLING))
        assert _sent(daemon) == []  # still lingering
        daemon._report(_st("a", agent_pb2.HEALTHY))  # settled: goes at once, with b's waiting status before it
        assert _sent(daemon) == [("b", "PULLING"), ("a", "HEALTHY")]
        assert daemon._held_flush is None

    asyncio.run(scenario())


def test_a_lone_progress_status_goes_after_the_linger(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = _daemon(tmp_path, linger=0.05)
        daemon._report(_st("a", agent_pb2.PULLING, "pulling 1 of 1 blobs"))
        assert _sent(daemon) == []
        await asyncio.sleep(0.2)
        assert _sent(daemon) == [("a", "PULLING")]
        assert daemon._outbox_changed.is_set()  # the sender is woken

    asyncio.run(scenario())


def test_no_linger_sends_every_status_and_settled_failures_are_immediate(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = _daemon(tmp_path, linger=0.0)
        daemon._report(_st("a", agent_pb2.PENDING))
        daemon._report(_st("a", agent_pb2.PULLING))
        assert _sent(daemon) == [("a", "PENDING"), ("a", "PULLING")]
        lingering = _daemon(tmp_path / "2", linger=30.0)
        for phase in (agent_pb2.FAILED, agent_pb2.ROLLED_BACK, agent_pb2.REMOVED):
            lingering._report(_st("x", phase))
        assert _sent(lingering) == [("x", "FAILED"), ("x", "ROLLED_BACK"), ("x", "REMOVED")]

    asyncio.run(scenario())


def test_flush_statuses_empties_the_held_ones_in_one_batch(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = _daemon(tmp_path, linger=30.0)
        daemon._report(_st("a", agent_pb2.STARTING))
        daemon._report(_st("b", agent_pb2.RESTARTING))
        daemon.flush_statuses()  # what the daemon does before it closes its state on stop
        assert _sent(daemon) == [("a", "STARTING"), ("b", "RESTARTING")]
        assert [m.seq for m in daemon.outbox.pending()] == [1, 2]  # type: ignore[union-attr]
        daemon.flush_statuses()
        assert len(_sent(daemon)) == 2

    asyncio.run(scenario())


def _kinds(daemon: AgentDaemon) -> list[str]:
    assert daemon.outbox is not None
    return [m.WhichOneof("body") or "" for m in daemon.outbox.pending()]


def test_a_desired_states_ack_rides_on_the_status_it_causes(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = _daemon(tmp_path, linger=30.0)
        assert daemon.state is not None and daemon.outbox is not None
        daemon.state.save_desired(agent_pb2.DesiredState(revision=5))
        daemon._acknowledge_desired()
        daemon._report(_st("a", agent_pb2.PULLING))
        assert _kinds(daemon) == []  # both wait out the linger
        daemon._report(_st("a", agent_pb2.HEALTHY))
        [message] = daemon.outbox.pending()
        assert message.status.phase == agent_pb2.HEALTHY and message.status.desired_revision == 5
        assert daemon._held_flush is None and not daemon._desired_unacked

    asyncio.run(scenario())


def test_a_desired_state_that_causes_no_status_gets_its_own_ack_after_the_linger(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = _daemon(tmp_path, linger=0.05)
        assert daemon.state is not None and daemon.outbox is not None
        daemon.state.save_desired(agent_pb2.DesiredState(revision=7))
        daemon._acknowledge_desired()
        assert _kinds(daemon) == []
        await asyncio.sleep(0.2)
        [message] = daemon.outbox.pending()
        assert message.desired_ack.revision == 7
        assert daemon._linger == 0.05  # no progress was held: the next linger is not longer
        await asyncio.sleep(0.2)
        assert len(daemon.outbox.pending()) == 1  # acked once

    asyncio.run(scenario())


def test_the_linger_grows_while_progress_lasts_and_starts_again_once_settled(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = _daemon(tmp_path, linger=0.05)
        lingers = []
        for _ in range(3):
            daemon._report(_st("a", agent_pb2.PULLING))
            await asyncio.sleep(daemon._linger + 0.1)
            lingers.append(daemon._linger)
        assert lingers == [0.1, 0.2, 0.4] and len(_sent(daemon)) == 3
        daemon._report(_st("a", agent_pb2.HEALTHY))
        assert daemon._linger == 0.05
        capped = _daemon(tmp_path / "2", linger=3.0)
        capped._linger = 3.0
        capped._report(_st("a", agent_pb2.PULLING))
        capped._flush_progress()
        assert capped._linger == MAX_STATUS_LINGER_S

    asyncio.run(scenario())


def test_a_burst_of_acks_is_applied_once_with_the_highest_seq(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = _daemon(tmp_path, linger=0.0)
        assert daemon.outbox is not None
        for i in range(5):
            daemon.queue(agent_pb2.AgentMessage(status=_st(f"s{i}", agent_pb2.HEALTHY)))
        calls: list[int] = []
        real_ack = daemon.outbox.ack
        daemon.outbox.ack = lambda seq: calls.append(seq) or real_ack(seq)  # type: ignore[method-assign]
        for seq in (2, 4, 3):
            daemon._ack(seq)
        assert calls == []  # applied after the burst, on the next loop turn
        await asyncio.sleep(0)
        assert calls == [4] and [m.seq for m in daemon.outbox.pending()] == [5]
        daemon._ack(5)
        await asyncio.sleep(0)
        assert calls == [4, 5] and daemon.outbox.pending() == []

    asyncio.run(scenario())


def test_the_hubs_telemetry_interval_applies_to_the_round_already_waiting(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = _daemon(tmp_path, linger=0.0)
        daemon.reconciler = types.SimpleNamespace(procs={})  # type: ignore[assignment]  # no services: system points
        rounds = asyncio.create_task(daemon._telemetry_loop())
        await asyncio.sleep(0.05)  # the first round waits out the default interval (a minute)
        daemon._set_telemetry_interval(1)  # a Welcome from a hub that wants a round every second
        await asyncio.sleep(1.6)  # one second plus the timers' quarter-second grain
        rounds.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await rounds
        sent = [m for m in daemon.outbox.pending() if m.WhichOneof("body") == "telemetry"]  # type: ignore[union-attr]
        assert len(sent) == 1 and sent[0].telemetry.points
        assert daemon._telemetry_timer is None  # a stopped agent leaves no timer behind

    asyncio.run(scenario())


def test_heartbeats_and_telemetry_rounds_start_at_a_random_phase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Agents that connect together must not report in step: the first wait is a random share of the interval."""

    async def scenario() -> tuple[list[float], list[float]]:
        daemon = _daemon(tmp_path, linger=0.0)
        daemon.heartbeat_s, daemon.telemetry_s = 30, 60
        sleeps: list[float] = []
        timer_delays: list[float] = []

        async def sleep(delay: float) -> None:
            sleeps.append(delay)
            if len(sleeps) == 3:
                raise asyncio.CancelledError

        def call_later(
            loop: asyncio.AbstractEventLoop, delay: float, callback: Callable[[], object]
        ) -> asyncio.TimerHandle:
            timer_delays.append(delay)
            return loop.call_later(3600, callback)

        monkeypatch.setattr("agent.daemon.timers.sleep", sleep)
        monkeypatch.setattr("agent.daemon.timers.call_later", call_later)
        link = _Link()
        with contextlib.suppress(asyncio.CancelledError):
            await daemon._heartbeats(link)  # type: ignore[arg-type]
        assert len(link.sent) == 1  # none on connecting (the Hello stands for it), one after the first wait
        daemon.reconciler = types.SimpleNamespace(procs={})  # type: ignore[assignment]
        rounds = asyncio.create_task(daemon._telemetry_loop())
        await asyncio.sleep(0)
        rounds.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await rounds
        return sleeps, timer_delays

    phases = [asyncio.run(scenario()) for _ in range(8)]
    for sleeps, timer_delays in phases:
        assert 0 <= sleeps[0] < 30 and sleeps[1] == 30 and 29 < sleeps[2] <= 30  # then the interval itself
        assert 0 <= timer_delays[0] < 60
    assert len({sleeps[0] for sleeps, _ in phases}) > 1  # drawn, not fixed


class _Link:
    def __init__(self) -> None:
        self.sent: list[agent_pb2.AgentMessage] = []

    async def send(self, message: agent_pb2.AgentMessage) -> None:
        self.sent.append(message)

    async def incoming(self) -> AsyncIterator[agent_pb2.HubMessage]:
        await asyncio.Event().wait()
        yield agent_pb2.HubMessage()


def test_no_heartbeat_while_other_messages_go_to_the_hub(tmp_path: Path) -> None:
    """A heartbeat only after an interval with nothing else sent, as MQTT's PINGREQ."""

    async def scenario() -> list[str]:
        daemon = _daemon(tmp_path, linger=0.0)
        daemon.heartbeat_s = 1
        link = _Link()
        tasks = [asyncio.create_task(daemon._sender(link, 0)), asyncio.create_task(daemon._heartbeats(link))]  # type: ignore[arg-type]
        for i in range(12):  # a status every 0.25 s for 3 s: the agent is never quiet for a second
            daemon.queue(agent_pb2.AgentMessage(status=_st(f"s{i}", agent_pb2.HEALTHY)))
            await asyncio.sleep(0.25)
        busy = [m.WhichOneof("body") or "" for m in link.sent]
        await asyncio.sleep(2.6)  # quiet: heartbeats again
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return busy + ["--"] + [m.WhichOneof("body") or "" for m in link.sent[len(busy) :]]

    kinds = asyncio.run(scenario())
    busy, quiet = kinds[: kinds.index("--")], kinds[kinds.index("--") + 1 :]
    assert busy == ["status"] * 12
    assert quiet and set(quiet) == {"heartbeat"}
