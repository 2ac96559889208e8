"""The gRPC front's one core listener: a device change wakes only that device's stream (real grpc.aio, fake core)."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable

import grpc
from grpc import aio

from hub.control.core import Session
from hub.control.grpc_front import CREDENTIAL_HEADER, DEVICE_HEADER, GrpcFront
from protos.edgeport.v1 import agent_pb2, agent_pb2_grpc


class FakeCore:
    """Just what the front calls: any credential passes, desired state is a revision per device."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[str], None]] = []
        self.revisions: dict[str, int] = {}
        self.closed: list[str] = []
        self.submitted: list[int] = []
        self.backlogged = False
        self.revoked: set[str] = set()
        self.reads: list[list[str]] = []  # each desired_states call: the devices it was asked for
        self.ack_from_thread = False
        self._ids = itertools.count(1)

    def authenticate_credential(self, device_id: str, credential: str) -> str:
        return device_id

    def open_session(self, device_id: str, hello: agent_pb2.Hello, transport: str) -> tuple[Session, agent_pb2.Welcome]:
        self.revisions.setdefault(device_id, 1)
        return Session(device_id, transport, next(self._ids)), agent_pb2.Welcome(device_id=device_id)

    def add_listener(self, listener: Callable[[str], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def notify(self, device_id: str) -> None:
        for listener in list(self.listeners):
            listener(device_id)

    def is_allowed(self, session: Session) -> bool:
        return True

    def desired_states(self, device_ids: list[str]) -> dict[str, agent_pb2.SignedDesiredState]:
        self.reads.append(list(device_ids))
        revisions = self.revisions
        return {d: agent_pb2.SignedDesiredState(revision=revisions[d]) for d in device_ids if d not in self.revoked}

    def outgoing(
        self, session: Session, desired: agent_pb2.SignedDesiredState | None = None
    ) -> list[agent_pb2.HubMessage]:
        revision = desired.revision if desired is not None else self.revisions[session.device_id]
        if revision == session.sent_revision:
            return []
        session.sent_revision = revision
        return [agent_pb2.HubMessage(desired=agent_pb2.SignedDesiredState(revision=revision))]

    def submit(self, session: Session, message: bytes, reply: Callable[..., None]) -> None:
        assert isinstance(message, bytes)  # the front leaves parsing to the group-commit writer
        seq = agent_pb2.AgentMessage.FromString(message).seq
        self.submitted.append(seq)
        if self.ack_from_thread:  # as the group-commit writer does, after its commit
            ack = agent_pb2.HubMessage(ack=agent_pb2.Ack(seq=seq))
            threading.Thread(target=reply, args=(ack,)).start()

    def congested(self, points: bool = True) -> bool:
        return self.backlogged

    def on_drained(self, callback: Callable[[], None]) -> None:
        pass

    def close_session(self, session: Session) -> None:
        self.closed.append(session.device_id)


async def _open(port: int, device: str) -> tuple[aio.Channel, aio.StreamStreamCall]:
    channel = aio.insecure_channel(f"127.0.0.1:{port}")
    metadata = [(DEVICE_HEADER, device), (CREDENTIAL_HEADER, "x")]
    call = agent_pb2_grpc.AgentServiceStub(channel).Connect(metadata=metadata)
    await call.write(agent_pb2.AgentMessage(hello=agent_pb2.Hello(device_id=device)))
    assert (await call.read()).HasField("welcome")
    assert (await call.read()).desired.revision == 1  # the state at connect
    return channel, call


def test_one_listener_wakes_only_the_changed_devices_stream() -> None:
    async def scenario() -> None:
        core = FakeCore()
        front = GrpcFront(core, None, port=0, insecure=True)  # type: ignore[arg-type]
        port = await front.start()
        try:
            (chan_a, a), (chan_b, b) = await _open(port, "dev-a"), await _open(port, "dev-b")
            assert len(core.listeners) == 1 and front.streams is not None and len(front.streams) == 2

            core.revisions["dev-a"] = 2
            notifier = threading.Thread(target=core.notify, args=("dev-a",))  # the core calls from any thread
            notifier.start()
            notifier.join()
            assert (await asyncio.wait_for(a.read(), 5)).desired.revision == 2

            # dev-b was not woken: its stream has nothing to read (and a wake would not yield: same revision).
            core.revisions["dev-b"] = 3
            read_b = asyncio.ensure_future(b.read())
            done, _ = await asyncio.wait([read_b], timeout=0.5)
            assert not done
            core.notify("dev-b")
            assert (await asyncio.wait_for(read_b, 5)).desired.revision == 3

            await a.done_writing()
            assert await asyncio.wait_for(a.code(), 5) == grpc.StatusCode.OK
            for _ in range(50):  # the server ends the stream, then unregisters it
                if len(front.streams) == 1:
                    break
                await asyncio.sleep(0.05)
            assert len(front.streams) == 1 and core.closed == ["dev-a"]
            core.notify("dev-a")  # a device with no stream here: nothing to wake, nothing breaks
            b.cancel()
            await chan_a.close()
            await chan_b.close()
        finally:
            await front.stop(0)
        assert core.listeners == []

    asyncio.run(scenario())


def test_a_burst_of_changes_is_read_in_one_batch_and_a_revoked_device_is_cut_off() -> None:
    async def scenario() -> None:
        core = FakeCore()
        front = GrpcFront(core, None, port=0, insecure=True)  # type: ignore[arg-type]
        port = await front.start()
        devices = [f"dev-{i}" for i in range(20)]
        try:
            opened = [await _open(port, d) for d in devices]
            core.reads.clear()
            for d in devices:
                core.revisions[d] = 2
            core.revoked.add("dev-0")
            notifier = threading.Thread(target=lambda: [core.notify(d) for d in devices])  # a rollout's burst
            notifier.start()
            notifier.join()
            for _, call in opened[1:]:
                assert (await asyncio.wait_for(call.read(), 5)).desired.revision == 2
            # The whole burst was read in a batch or two (the first change may start a read on its own), not
            # one read per stream.
            assert 1 <= len(core.reads) <= 2 and sorted(d for r in core.reads for d in r) == sorted(devices)
            revoked = opened[0][1]
            assert await asyncio.wait_for(revoked.code(), 5) == grpc.StatusCode.UNAUTHENTICATED
            for channel, call in opened:
                call.cancel()
                await channel.close()
        finally:
            await front.stop(0)

    asyncio.run(scenario())


def test_a_congested_core_pauses_reading_until_it_drains() -> None:
    async def scenario() -> None:
        core = FakeCore()
        front = GrpcFront(core, None, port=0, insecure=True)  # type: ignore[arg-type]
        port = await front.start()
        try:
            channel, call = await _open(port, "dev-a")
            core.backlogged = True
            for seq in (1, 2, 3):
                await call.write(agent_pb2.AgentMessage(seq=seq, heartbeat=agent_pb2.Heartbeat()))
            await asyncio.sleep(0.8)
            assert core.submitted == [1]  # read one, saw the congestion, stopped reading
            core.backlogged = False  # drained; no callback fired, so the front's watchdog must notice
            for _ in range(40):
                if core.submitted == [1, 2, 3]:
                    break
                await asyncio.sleep(0.05)
            assert core.submitted == [1, 2, 3]
            call.cancel()
            await channel.close()
        finally:
            await front.stop(0)

    asyncio.run(scenario())


def test_acks_from_the_writer_thread_reach_the_stream_in_order() -> None:
    async def scenario() -> None:
        core = FakeCore()
        core.ack_from_thread = True
        front = GrpcFront(core, None, port=0, insecure=True)  # type: ignore[arg-type]
        port = await front.start()
        try:
            channel, call = await _open(port, "dev-a")
            for seq in range(1, 21):
                await call.write(agent_pb2.AgentMessage(seq=seq, heartbeat=agent_pb2.Heartbeat()))
            acked = {(await asyncio.wait_for(call.read(), 5)).ack.seq for _ in range(20)}
            assert acked == set(range(1, 21))
            call.cancel()
            await channel.close()
        finally:
            await front.stop(0)

    asyncio.run(scenario())


def test_a_first_message_that_is_not_a_hello_is_refused() -> None:
    async def scenario() -> None:
        front = GrpcFront(FakeCore(), None, port=0, insecure=True)  # type: ignore[arg-type]
        port = await front.start()
        try:
            for first in (b"\xff\xff not protobuf", agent_pb2.AgentMessage(seq=1).SerializeToString()):
                async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    connect = channel.stream_stream("/edgeport.v1.AgentService/Connect")
                    call = connect(metadata=[(DEVICE_HEADER, "dev-a"), (CREDENTIAL_HEADER, "x")])
                    await call.write(first)
                    assert await asyncio.wait_for(call.code(), 5) == grpc.StatusCode.INVALID_ARGUMENT
                    assert "Hello" in (await call.details())
        finally:
            await front.stop(0)

    asyncio.run(scenario())


def test_both_ends_of_the_agent_channel_skip_bdp_pings_and_wait_20_s_for_a_keepalive_answer() -> None:
    """Measured choices (benchmarks/grpc_messages.py, benchmarks/fleet.py): BDP pings after every quiet spell cost
    30-38% of the CPU per round trip, and a 10 s keepalive timeout ended a reconnecting fleet's streams."""
    from agent.link.grpc import _CHANNEL_OPTIONS
    from hub.control.grpc_front import SERVER_OPTIONS

    for options in (dict(SERVER_OPTIONS), dict(_CHANNEL_OPTIONS)):
        assert options["grpc.http2.bdp_probe"] == 0
        assert options["grpc.keepalive_timeout_ms"] >= 20_000
        assert options["grpc.keepalive_time_ms"] <= 30_000  # a vanished peer is still noticed within a minute
