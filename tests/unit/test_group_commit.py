"""Group commit of agent messages: one transaction per batch, acks only after the commit, savepoints per message."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hub.control.core import Session
from hub.control.group_commit import GroupCommit
from hub.errors import BadInput
from hub.services import HubServices
from hub.store.db import Database
from protos.edgeport.v1 import agent_pb2
from tests.unit.enrollment import enroll


def _points(seq: int, n: int = 3) -> agent_pb2.AgentMessage:
    now = int(time.time() * 1000)
    points = [agent_pb2.TelemetryPoint(at_ms=now, metric="sim.load", value=seq * 100 + i) for i in range(n)]
    return agent_pb2.AgentMessage(seq=seq, telemetry=agent_pb2.TelemetryBatch(points=points))


def _count(hub: HubServices) -> int:
    with hub.db.read() as db:
        return db.execute("SELECT count(*) FROM telemetry_points WHERE metric = 'sim.load'").fetchone()[0]


def test_nested_transaction_is_a_savepoint(tmp_path: Path) -> None:
    database = Database(tmp_path / "d")
    try:
        with database.transaction() as db:
            db.execute("CREATE TABLE t (x INTEGER)")
        with database.transaction() as db:
            db.execute("INSERT INTO t VALUES (1)")
            with pytest.raises(ValueError), database.transaction() as inner:
                inner.execute("INSERT INTO t VALUES (2)")
                raise ValueError("undo only the inner block")
            with database.transaction() as inner:
                inner.execute("INSERT INTO t VALUES (3)")
        with database.read() as db:
            assert [r[0] for r in db.execute("SELECT x FROM t ORDER BY x")] == [1, 3]
        with pytest.raises(RuntimeError), database.transaction() as db:  # the outer one still undoes everything
            db.execute("INSERT INTO t VALUES (4)")
            with database.transaction() as inner:
                inner.execute("INSERT INTO t VALUES (5)")
            raise RuntimeError("undo all")
        with database.read() as db:
            assert [r[0] for r in db.execute("SELECT x FROM t ORDER BY x")] == [1, 3]
    finally:
        database.close()


def test_snapshot_reads_do_not_wait_for_an_open_transaction(tmp_path: Path) -> None:
    database = Database(tmp_path / "d")
    try:
        with database.transaction() as db:
            db.execute("CREATE TABLE t (x INTEGER)")
            db.execute("INSERT INTO t VALUES (1)")
        seen: list[list[int]] = []
        with database.transaction() as db:
            db.execute("INSERT INTO t VALUES (2)")
            with database.snapshot() as own:  # this thread's transaction: its own writes are visible
                assert [r[0] for r in own.execute("SELECT x FROM t ORDER BY x")] == [1, 2]

            def other_thread() -> None:
                with database.snapshot() as snap:  # must not block on the writer's open transaction
                    seen.append([r[0] for r in snap.execute("SELECT x FROM t ORDER BY x")])

            reader = threading.Thread(target=other_thread)
            reader.start()
            reader.join(5)
            assert not reader.is_alive() and seen == [[1]]  # the last commit, not the open transaction
        with database.snapshot() as snap:
            assert [r[0] for r in snap.execute("SELECT x FROM t ORDER BY x")] == [1, 2]
            with pytest.raises(sqlite3.OperationalError):  # read-only
                snap.execute("INSERT INTO t VALUES (3)")
    finally:
        database.close()


def test_batch_is_stored_in_one_commit_and_each_session_acked_once(hub: HubServices) -> None:
    for name in ("a", "b"):
        enroll(hub, name)
    core = hub.control
    sa, _ = core.open_session("a", agent_pb2.Hello(device_id="a"), transport="test")
    sb, _ = core.open_session("b", agent_pb2.Hello(device_id="b"), transport="test")
    acks: dict[str, list[int]] = {"a": [], "b": []}
    # Hold the database so everything below queues up and lands in a single batch.
    with hub.db.transaction():
        for seq in range(1, 51):
            core.submit(sa, _points(seq), lambda m: acks["a"].append(m.ack.seq))
        for seq in (1, 2, 4):  # 3 is missing: b's ack must stop at 2
            core.submit(sb, _points(seq), lambda m: acks["b"].append(m.ack.seq))
        time.sleep(0.1)
        assert acks == {"a": [], "b": []}  # nothing acked before the commit
    assert core.ingest.wait_idle(10)
    assert acks["a"][-1] == 50 and acks["b"][-1] == 2
    assert len(acks["a"]) < 50  # coalesced: one cumulative ack per session per batch, not one per message
    assert _count(hub) == 53 * 3
    # a resend of what is stored is acked and stored nowhere twice
    core.submit(sa, _points(50), lambda m: acks["a"].append(m.ack.seq))
    core.submit(sb, _points(3), lambda m: acks["b"].append(m.ack.seq))
    assert core.ingest.wait_idle(10)
    assert acks["a"][-1] == 50 and acks["b"][-1] == 4
    assert _count(hub) == 54 * 3
    assert hub.fleet.get("a")["acked_seq"] == 50 and hub.fleet.get("b")["acked_seq"] == 4


def test_a_failing_message_undoes_only_itself(hub: HubServices, monkeypatch: pytest.MonkeyPatch) -> None:
    enroll(hub, "a")
    core = hub.control
    session, _ = core.open_session("a", agent_pb2.Hello(device_id="a"), transport="test")
    real = hub.telemetry.ingest

    def ingest(device: str, batch: agent_pb2.TelemetryBatch) -> int:
        if batch.points[0].value == 200:  # seq 2's points
            real(device, batch)  # stored, then undone by the savepoint
            raise KeyError("a bug while storing seq 2")
        return real(device, batch)

    monkeypatch.setattr(hub.telemetry, "ingest", ingest)
    acks: list[int] = []
    with hub.db.transaction():
        for seq in (1, 2, 3):
            core.submit(session, _points(seq), lambda m: acks.append(m.ack.seq))
    assert core.ingest.wait_idle(10)
    assert _count(hub) == 2 * 3  # seq 1 and 3 stored; seq 2 undone entirely (its points and its seq)
    assert acks[-1] == 1  # seq 2 was not stored, so the ack stops before it and the agent resends it
    monkeypatch.setattr(hub.telemetry, "ingest", real)
    core.submit(session, _points(2), lambda m: acks.append(m.ack.seq))
    assert core.ingest.wait_idle(10)
    assert acks[-1] == 3 and _count(hub) == 3 * 3


def test_refused_message_is_acked_and_skipped(hub: HubServices) -> None:
    enroll(hub, "a")
    core = hub.control
    session, _ = core.open_session("a", agent_pb2.Hello(device_id="a"), transport="test")
    acks: list[int] = []

    def refuse(device: str, status: agent_pb2.DeploymentStatus) -> None:
        raise BadInput(f"service {status.service} is unknown")

    core.deployments.record_status = refuse
    status = agent_pb2.AgentMessage(seq=1, status=agent_pb2.DeploymentStatus(service="ghost", generation=1))
    core.submit(session, status, lambda m: acks.append(m.ack.seq))
    core.submit(session, _points(2), lambda m: acks.append(m.ack.seq))
    assert core.ingest.wait_idle(10)
    assert acks[-1] == 2 and _count(hub) == 3  # a refusal is final: a resend would be refused too


def test_serialized_messages_are_parsed_by_the_writer_and_garbage_is_dropped(hub: HubServices) -> None:
    enroll(hub, "a")
    core = hub.control
    session, _ = core.open_session("a", agent_pb2.Hello(device_id="a"), transport="test")
    acks: list[int] = []
    with hub.db.transaction():  # all three in one batch: the garbage must not cost the others
        core.submit(session, _points(1).SerializeToString(), lambda m: acks.append(m.ack.seq))
        core.submit(session, b"\xff\xff\xff not protobuf", lambda m: acks.append(m.ack.seq))
        core.submit(session, _points(2).SerializeToString(), lambda m: acks.append(m.ack.seq))
        assert core.ingest._queued_points == 0  # serialized: no parsed points held in the queue
    assert core.ingest.wait_idle(10)
    assert acks[-1] == 2 and _count(hub) == 2 * 3


def test_failed_commit_acks_nothing_and_the_resend_is_stored_once(tmp_path: Path) -> None:
    hub = HubServices.open(tmp_path / "hub")
    try:
        enroll(hub, "a")
        core = hub.control
        session, _ = core.open_session("a", agent_pb2.Hello(device_id="a"), transport="test")
        acks: list[int] = []
        commit_fails = threading.Event()
        commit_fails.set()
        real_store = core._store

        def store(s: Session, m: agent_pb2.AgentMessage) -> int | None:
            acked = real_store(s, m)
            if commit_fails.is_set() and m.seq == 2:
                raise sqlite3.OperationalError("disk I/O error")  # fails the whole batch, like a failed COMMIT
            return acked

        writer = GroupCommit(hub.db, store, on_rollback=hub.fleet.forget_seqs)
        with hub.db.transaction():
            for seq in (1, 2):
                writer.submit(session, _points(seq), lambda m: acks.append(m.ack.seq))
        assert writer.wait_idle(10)
        # seq 1 may have gone in an earlier batch of its own; seq 2's batch was rolled back and never acked
        assert 2 not in acks and _count(hub) == 3 * len(acks) and writer.stats["failed_batches"] == 1
        commit_fails.clear()
        for seq in (1, 2):  # the agent resends what was never acked
            writer.submit(session, _points(seq), lambda m: acks.append(m.ack.seq))
        assert writer.wait_idle(10)
        assert acks[-1] == 2 and _count(hub) == 2 * 3
        writer.close()
    finally:
        hub.close()


def test_close_stores_what_was_submitted(tmp_path: Path) -> None:
    hub = HubServices.open(tmp_path / "hub")
    enroll(hub, "a")
    session, _ = hub.control.open_session("a", agent_pb2.Hello(device_id="a"), transport="test")
    for seq in range(1, 201):
        hub.control.submit(session, _points(seq, 1), lambda m: None)
    hub.close()  # stores the queue before releasing the database
    again = HubServices.open(tmp_path / "hub")
    try:
        assert _count(again) == 200 and again.fleet.get("a")["acked_seq"] == 200
    finally:
        again.close()


def test_congestion_is_flagged_past_high_water_and_drain_is_announced(hub: HubServices) -> None:
    enroll(hub, "a")
    session, _ = hub.control.open_session("a", agent_pb2.Hello(device_id="a"), transport="test")
    writer = GroupCommit(hub.db, hub.control._store, on_rollback=hub.fleet.forget_seqs, max_batch=5, high_water=10)
    drained = threading.Event()
    writer.on_drained(drained.set)
    with hub.db.transaction():  # the writer cannot store anything meanwhile
        for seq in range(1, 31):
            writer.submit(session, _points(seq, 1), lambda m: None)
        assert writer.congested() and writer.congested(points=False) and not drained.is_set()
    assert drained.wait(10)
    assert writer.wait_idle(10) and not writer.congested() and not writer.congested(points=False)
    assert _count(hub) == 30
    writer.close()


def test_queued_telemetry_points_have_their_own_high_water(hub: HubServices) -> None:
    # A few big telemetry messages hold as much memory as thousands of small ones: points count too.
    enroll(hub, "a")
    session, _ = hub.control.open_session("a", agent_pb2.Hello(device_id="a"), transport="test")
    writer = GroupCommit(
        hub.db, hub.control._store, on_rollback=hub.fleet.forget_seqs, max_batch=5, high_water=1000,
        high_water_points=100,
    )  # fmt: skip
    drained = threading.Event()
    writer.on_drained(drained.set)
    with hub.db.transaction():  # the writer cannot store anything meanwhile
        for seq in range(1, 3):
            writer.submit(session, _points(seq, 50), lambda m: None)
        assert not writer.congested()  # at most 100 points queued: at the mark, not past it
        # The writer may have taken one or both off the queue before it blocked: three more put 150-250 points
        # in the queue either way, past the mark.
        for seq in range(3, 6):
            writer.submit(session, _points(seq, 50), lambda m: None)
        assert writer.congested() and writer.backlog() <= 5
        assert not writer.congested(points=False)  # the message mark alone (the gRPC front's) is not passed
    assert drained.wait(10)
    assert writer.wait_idle(10) and not writer.congested()
    assert _count(hub) == 250
    writer.close()


def test_a_sessions_ack_waits_the_ack_delay_and_covers_what_came_meanwhile(hub: HubServices) -> None:
    enroll(hub, "a")
    enroll(hub, "b")
    sa, _ = hub.control.open_session("a", agent_pb2.Hello(device_id="a"), transport="test")
    sb, _ = hub.control.open_session("b", agent_pb2.Hello(device_id="b"), transport="test")
    writer = GroupCommit(hub.db, hub.control._store, on_rollback=hub.fleet.forget_seqs, ack_delay=0.5)
    acks: list[tuple[str, int, float]] = []
    start = time.monotonic()

    def reply(device: str) -> Callable[[agent_pb2.HubMessage], None]:
        return lambda m: acks.append((device, m.ack.seq, time.monotonic() - start))

    writer.submit(sa, _points(1), reply("a"))
    time.sleep(0.2)
    assert _count(hub) == 3 and acks == []  # stored, not yet acked
    writer.submit(sa, _points(2), reply("a"))  # stored while a's ack waits: the same ack covers it
    writer.submit(sb, _points(1), reply("b"))
    time.sleep(0.45)
    assert [(d, s) for d, s, _ in acks] == [("a", 2)]  # a's ack went 0.5 s after its first message
    assert 0.45 <= acks[0][2] < 0.65
    writer.submit(sb, _points(2), reply("b"))
    assert writer.wait_idle(5)  # sends what is held at once
    assert [(d, s) for d, s, _ in acks] == [("a", 2), ("b", 2)] and acks[1][2] < 0.9
    writer.close()
