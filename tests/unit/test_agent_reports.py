"""The agent's path from reconciler statuses and hub Acks to the outbox: progress statuses linger (longer
while progress lasts) and are replaced by newer ones, settled ones go at once, a desired state's ack rides on
the statuses it causes, a burst of Acks is applied once, periodic reports start at a random phase."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from agent.outbox import Outbox
from agent.reports import MAX_STATUS_LINGER_S, StatusReports
from agent.session import HubSession
from agent.state import AgentState
from agent.telemetry import TelemetryCollector
from agent.telemetry_loop import TelemetryRounds
from protos.edgeport.v1 import agent_pb2


def _reports(tmp_path: Path, linger: float) -> StatusReports:
    state = AgentState(tmp_path)
    return StatusReports(Outbox(state), lambda: state.desired().revision, asyncio.Event(), lambda line: None, linger)


def _queue(outbox: Outbox, changed: asyncio.Event) -> Callable[[agent_pb2.AgentMessage], None]:
    def queue(message: agent_pb2.AgentMessage) -> None:
        outbox.append(message)
        changed.set()

    return queue


def _session(outbox: Outbox, heartbeat_s: int) -> HubSession:
    return HubSession(lambda: None, agent_pb2.Hello, outbox, asyncio.Event(), lambda message: None,  # type: ignore[arg-type, return-value]
                      say=lambda line: None, heartbeat_s=heartbeat_s)  # fmt: skip


def _rounds(outbox: Outbox, interval_s: int = 60) -> TelemetryRounds:
    """Telemetry rounds with no services running: system points only."""
    return TelemetryRounds(TelemetryCollector(), dict, outbox.append, outbox.take_dropped, labels={},
                           interval_s=interval_s)  # fmt: skip


def _st(service: str, phase: int, message: str = "") -> agent_pb2.DeploymentStatus:
    return agent_pb2.DeploymentStatus(service=service, generation=1, phase=phase, message=message)


def _sent(reports: StatusReports) -> list[tuple[str, str]]:
    return [(m.status.service, agent_pb2.Phase.Name(m.status.phase)) for m in reports.outbox.pending()]


def test_progress_statuses_superseded_within_the_linger_are_not_sent(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = _reports(tmp_path, linger=30.0)
        for phase in (agent_pb2.PENDING, agent_pb2.PULLING, agent_pb2.STARTING):
            daemon.report(_st("a", phase))
        daemon.report(_st("b", agent_pb2.PULLING))
        assert _sent(daemon) == []  # still lingering
        daemon.report(_st("a", agent_pb2.HEALTHY))  # settled: goes at once, with b's waiting status before it
        assert _sent(daemon) == [("b", "PULLING"), ("a", "HEALTHY")]
        assert daemon.held_flush is None

    asyncio.run(scenario())


def test_a_lone_progress_status_goes_after_the_linger(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = _reports(tmp_path, linger=0.05)
        daemon.report(_st("a", agent_pb2.PULLING, "pulling 1 of 1 blobs"))
        assert _sent(daemon) == []
        await asyncio.sleep(0.2)
        assert _sent(daemon) == [("a", "PULLING")]
        assert daemon.outbox_changed.is_set()  # the sender is woken

    asyncio.run(scenario())


def test_no_linger_sends_every_status_and_settled_failures_are_immediate(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = _reports(tmp_path, linger=0.0)
        daemon.report(_st("a", agent_pb2.PENDING))
        daemon.report(_st("a", agent_pb2.PULLING))
        assert _sent(daemon) == [("a", "PENDING"), ("a", "PULLING")]
        lingering = _reports(tmp_path / "2", linger=30.0)
        for phase in (agent_pb2.FAILED, agent_pb2.ROLLED_BACK, agent_pb2.REMOVED):
            lingering.report(_st("x", phase))
        assert _sent(lingering) == [("x", "FAILED"), ("x", "ROLLED_BACK"), ("x", "REMOVED")]

    asyncio.run(scenario())


def test_flush_statuses_empties_the_held_ones_in_one_batch(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = _reports(tmp_path, linger=30.0)
        daemon.report(_st("a", agent_pb2.STARTING))
        daemon.report(_st("b", agent_pb2.RESTARTING))
        daemon.flush()  # what the daemon does before it closes its state on stop
        assert _sent(daemon) == [("a", "STARTING"), ("b", "RESTARTING")]
        assert [m.seq for m in daemon.outbox.pending()] == [1, 2]
        daemon.flush()
        assert len(_sent(daemon)) == 2

    asyncio.run(scenario())


def _kinds(reports: StatusReports) -> list[str]:
    return [m.WhichOneof("body") or "" for m in reports.outbox.pending()]


def test_a_desired_states_ack_rides_on_the_status_it_causes(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = _reports(tmp_path, linger=30.0)
        daemon.outbox.state.save_desired(agent_pb2.DesiredState(revision=5))
        daemon.acknowledge_desired()
        daemon.report(_st("a", agent_pb2.PULLING))
        assert _kinds(daemon) == []  # both wait out the linger
        daemon.report(_st("a", agent_pb2.HEALTHY))
        [message] = daemon.outbox.pending()
        assert message.status.phase == agent_pb2.HEALTHY and message.status.desired_revision == 5
        assert daemon.held_flush is None and not daemon.desired_unacked

    asyncio.run(scenario())


def test_a_desired_state_that_causes_no_status_gets_its_own_ack_after_the_linger(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = _reports(tmp_path, linger=0.05)
        daemon.outbox.state.save_desired(agent_pb2.DesiredState(revision=7))
        daemon.acknowledge_desired()
        assert _kinds(daemon) == []
        await asyncio.sleep(0.2)
        [message] = daemon.outbox.pending()
        assert message.desired_ack.revision == 7
        assert daemon.linger == 0.05  # no progress was held: the next linger is not longer
        await asyncio.sleep(0.2)
        assert len(daemon.outbox.pending()) == 1  # acked once

    asyncio.run(scenario())


def test_the_linger_grows_while_progress_lasts_and_starts_again_once_settled(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = _reports(tmp_path, linger=0.05)
        lingers = []
        for _ in range(3):
            daemon.report(_st("a", agent_pb2.PULLING))
            await asyncio.sleep(daemon.linger + 0.1)
            lingers.append(daemon.linger)
        assert lingers == [0.1, 0.2, 0.4] and len(_sent(daemon)) == 3
        daemon.report(_st("a", agent_pb2.HEALTHY))
        assert daemon.linger == 0.05
        capped = _reports(tmp_path / "2", linger=3.0)
        capped.linger = 3.0
        capped.report(_st("a", agent_pb2.PULLING))
        capped.flush_progress()
        assert capped.linger == MAX_STATUS_LINGER_S

    asyncio.run(scenario())


def test_a_burst_of_acks_is_applied_once_with_the_highest_seq(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = _reports(tmp_path, linger=0.0)
        queue = _queue(daemon.outbox, daemon.outbox_changed)
        for i in range(5):
            queue(agent_pb2.AgentMessage(status=_st(f"s{i}", agent_pb2.HEALTHY)))
        calls: list[int] = []
        real_ack = daemon.outbox.ack
        daemon.outbox.ack = lambda seq: calls.append(seq) or real_ack(seq)  # type: ignore[method-assign]
        for seq in (2, 4, 3):
            daemon.ack(seq)
        assert calls == []  # applied after the burst, on the next loop turn
        await asyncio.sleep(0)
        assert calls == [4] and [m.seq for m in daemon.outbox.pending()] == [5]
        daemon.ack(5)
        await asyncio.sleep(0)
        assert calls == [4, 5] and daemon.outbox.pending() == []

    asyncio.run(scenario())


def test_the_hubs_telemetry_interval_applies_to_the_round_already_waiting(tmp_path: Path) -> None:
    async def scenario() -> None:
        outbox = Outbox(AgentState(tmp_path))
        rounds = _rounds(outbox)
        running = asyncio.create_task(rounds.run())
        await asyncio.sleep(0.05)  # the first round waits out the default interval (a minute)
        rounds.set_interval(1)  # a Welcome from a hub that wants a round every second
        await asyncio.sleep(1.6)  # one second plus the timers' quarter-second grain
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        sent = [m for m in outbox.pending() if m.WhichOneof("body") == "telemetry"]
        assert len(sent) == 1 and sent[0].telemetry.points
        assert not rounds.waiting  # a stopped agent leaves no timer behind

    asyncio.run(scenario())


def test_heartbeats_and_telemetry_rounds_start_at_a_random_phase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Agents that connect together must not report in step: the first wait is a random share of the interval."""

    async def scenario() -> tuple[list[float], list[float]]:
        outbox = Outbox(AgentState(tmp_path))
        session = _session(outbox, heartbeat_s=30)
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

        monkeypatch.setattr("agent.timers.sleep", sleep)
        monkeypatch.setattr("agent.timers.call_later", call_later)
        link = _Link()
        with contextlib.suppress(asyncio.CancelledError):
            await session.heartbeats(link)  # type: ignore[arg-type]
        assert len(link.sent) == 1  # none on connecting (the Hello stands for it), one after the first wait
        rounds = asyncio.create_task(_rounds(outbox, interval_s=60).run())
        await asyncio.sleep(0)
        rounds.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await rounds
        outbox.state.close()
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
        outbox = Outbox(AgentState(tmp_path))
        session = _session(outbox, heartbeat_s=1)
        queue = _queue(outbox, session.outbox_changed)
        link = _Link()
        tasks = [asyncio.create_task(session.sender(link, 0)), asyncio.create_task(session.heartbeats(link))]  # type: ignore[arg-type]
        for i in range(12):  # a status every 0.25 s for 3 s: the agent is never quiet for a second
            queue(agent_pb2.AgentMessage(status=_st(f"s{i}", agent_pb2.HEALTHY)))
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


def test_a_request_for_a_tls_certificate_goes_at_once(tmp_path: Path) -> None:
    """The deploy waits for the hub's answer: a Pending status carrying the request does not linger."""

    async def scenario() -> None:
        daemon = _reports(tmp_path, linger=30.0)
        daemon.report(_st("a", agent_pb2.PULLING))
        waiting = _st("b", agent_pb2.PENDING, "waiting for the hub to issue its TLS certificate")
        waiting.tls_request.csr_pem = b"csr"
        daemon.report(waiting)
        assert _sent(daemon) == [("a", "PULLING"), ("b", "PENDING")]
        assert daemon.outbox.pending()[-1].status.tls_request.csr_pem == b"csr"

    asyncio.run(scenario())
