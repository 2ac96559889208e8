"""Agent outbox and state: order, bound with drop count, ack trimming, survival across restarts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.outbox import Outbox
from agent.state import WAL_PAGES, AgentState, Identity, ServiceRecord
from protos.edgeport.v1 import agent_pb2


def _status(service: str, phase: int = agent_pb2.HEALTHY, message: str = "") -> agent_pb2.AgentMessage:
    return agent_pb2.AgentMessage(status=agent_pb2.DeploymentStatus(service=service, phase=phase, message=message))


def test_seqs_grow_and_pending_is_in_order(tmp_path: Path) -> None:
    box = Outbox(AgentState(tmp_path))
    seqs = [box.append(_status(f"s{i}")) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert [m.status.service for m in box.pending()] == [f"s{i}" for i in range(5)]
    assert [m.seq for m in box.pending(after=3)] == [4, 5]
    assert box.first_pending_seq() == 1 and box.next_seq() == 6


def test_cumulative_ack_trims_and_seq_keeps_growing(tmp_path: Path) -> None:
    box = Outbox(AgentState(tmp_path))
    for i in range(4):
        box.append(_status(f"s{i}"))
    assert box.ack(2) == 2
    assert [m.seq for m in box.pending()] == [3, 4]
    assert box.ack(2) == 0  # a repeated ack is harmless
    box.ack(4)
    assert box.pending() == [] and box.first_pending_seq() == 5
    assert box.append(_status("next")) == 5  # never reuses an acked seq


def test_bound_drops_oldest_and_counts(tmp_path: Path) -> None:
    box = Outbox(AgentState(tmp_path), max_bytes=1000)
    for i in range(50):
        box.append(_status(f"s{i}", message="x" * 80))
    count, size = box.size()
    assert size <= 1000 and 0 < count < 50
    pending = box.pending()
    assert pending[-1].status.service == "s49"  # newest kept, oldest dropped
    assert [m.seq for m in pending] == list(range(51 - count, 51))
    assert box.take_dropped() == 50 - count
    assert box.take_dropped() == 0


def test_outbox_and_state_survive_restart(tmp_path: Path) -> None:
    state = AgentState(tmp_path)
    box = Outbox(state)
    for i in range(3):
        box.append(_status(f"s{i}"))
    box.ack(1)
    ident = Identity(device_id="dev-1", hub="127.0.0.1:7070", grpc_address="127.0.0.1:7071", credential="ab")
    state.save_identity(ident)
    manifest = agent_pb2.ServiceManifest(name="svc", generation=3, port=5001)
    state.save_service(ServiceRecord(name="svc", generation=3, manifest=manifest, pid=42, pid_start=7, port=5001))
    assert state.save_desired(agent_pb2.DesiredState(revision=5, services=[manifest]))
    box.flush()  # as the daemon does when it stops
    state.close()

    state2 = AgentState(tmp_path)
    box2 = Outbox(state2)
    assert [m.status.service for m in box2.pending()] == ["s1", "s2"]
    assert box2.append(_status("after")) == 4
    ident = state2.identity()
    assert ident is not None and ident.device_id == "dev-1"
    rec = state2.service("svc")
    assert rec is not None and rec.manifest == manifest and (rec.pid, rec.pid_start, rec.port) == (42, 7, 5001)
    assert state2.desired().revision == 5


def test_older_desired_revision_is_ignored(tmp_path: Path) -> None:
    state = AgentState(tmp_path)
    assert state.save_desired(agent_pb2.DesiredState(revision=4))
    assert not state.save_desired(agent_pb2.DesiredState(revision=3, services=[agent_pb2.ServiceManifest(name="x")]))
    assert state.desired().revision == 4 and not state.desired().services


def test_ack_beyond_our_seq_moves_the_next_seq_past_it(tmp_path: Path) -> None:
    box = Outbox(AgentState(tmp_path))
    box.append(_status("a"))
    box.ack(40)  # the hub has seen seqs up to 40 from this device (state restored from an older copy)
    assert box.pending() == []
    assert box.append(_status("b")) == 41


def test_append_many_is_one_ordered_batch_and_survives_restart(tmp_path: Path) -> None:
    state = AgentState(tmp_path)
    box = Outbox(state)
    box.append(_status("first"))
    assert box.append_many([_status("a"), _status("b"), _status("c")]) == [2, 3, 4]
    assert box.append_many([]) == []
    assert [(m.seq, m.status.service) for m in box.pending(after=1)] == [(2, "a"), (3, "b"), (4, "c")]
    box.ack(4)
    box.flush()
    state.close()
    box2 = Outbox(AgentState(tmp_path))  # the next seq is stored, not only known in memory
    assert box2.next_seq() == 5 and box2.first_pending_seq() == 5 and box2.append(_status("d")) == 5


def test_a_failed_append_leaves_memory_and_file_alike(tmp_path: Path) -> None:
    state = AgentState(tmp_path)
    box = Outbox(state)
    box.append(_status("a"))
    state.conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON outbox WHEN NEW.kind = 'status' AND "
                       "length(NEW.body) > 30 BEGIN SELECT RAISE(ABORT, 'disk full'); END")  # fmt: skip
    with pytest.raises(sqlite3.IntegrityError):
        box.append_many([_status("b"), _status("c", message="x" * 40)])
    assert box.next_seq() == 2 and state.get("next_seq") == "2" and box.size() == (1, box._bytes)
    assert box.append(_status("d")) == 2


def test_state_reads_come_from_memory_but_match_the_file(tmp_path: Path) -> None:
    state = AgentState(tmp_path)
    manifest = agent_pb2.ServiceManifest(name="svc", generation=2)
    state.save_service(ServiceRecord(name="svc", generation=2, manifest=manifest))
    rec = state.service("svc")
    assert rec is not None
    rec.generation = 9  # a caller's copy: changing it changes nothing stored
    assert state.service("svc").generation == 2  # type: ignore[union-attr]
    desired = agent_pb2.DesiredState(revision=3, services=[manifest])
    state.save_desired(desired)
    desired.revision = 99  # the caller's message is not the stored one
    assert state.desired().revision == 3
    with pytest.raises(RuntimeError), state.transaction():
        state.put("k", "v")
        state.delete_service("svc")
        raise RuntimeError("crash mid-transaction")
    assert state.get("k") is None and state.service("svc") is not None  # rolled back in memory too
    with state.transaction(), state.transaction():  # nested: one commit
        state.put("k", "v")
    state.close()
    again = AgentState(tmp_path)
    assert again.get("k") == "v" and again.desired().revision == 3 and again.service("svc").generation == 2  # type: ignore[union-attr]
    assert again.keys("k") == [("k", "v")]


def test_pending_from_memory_matches_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = AgentState(tmp_path)
    box = Outbox(state, max_bytes=2000)
    for i in range(100):  # more than RECENT, and past the byte bound (trimmed)
        box.append(_status(f"s{i}", message="y" * 10))
        box.ack(i - 3) if i % 7 == 0 else None
    fresh = Outbox(AgentState(tmp_path))  # nothing in memory: every read goes to SQLite
    for after in (0, 50, 90, 97, 99, 100):
        for limit in (1, 3, 256):
            assert [m.SerializeToString() for m in box.pending(after, limit)] == [
                m.SerializeToString() for m in fresh.pending(after, limit)
            ]
    monkeypatch.setattr(state, "conn", None)  # the newest ones need no database at all
    assert [m.status.service for m in box.pending(after=97)] == ["s97", "s98", "s99"]


def test_an_ack_costs_no_commit_of_its_own_and_its_rows_go_with_the_next_append(tmp_path: Path) -> None:
    state = AgentState(tmp_path)
    box = Outbox(state)
    for i in range(3):
        box.append(_status(f"s{i}"))
    commits = state.conn.total_changes
    assert box.ack(2) == 2
    assert state.conn.total_changes == commits  # nothing written yet
    assert [m.seq for m in box.pending()] == [3] and box.size()[0] == 1
    assert state.conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 3  # rows 1-2 still stored
    box.append(_status("s3"))
    assert [r[0] for r in state.conn.execute("SELECT seq FROM outbox ORDER BY seq")] == [3, 4]
    assert box.size() == (2, box._bytes)  # the acked rows' bytes went with them


def test_acked_rows_are_deleted_on_flush_and_resent_at_most_after_a_crash(tmp_path: Path) -> None:
    state = AgentState(tmp_path)
    box = Outbox(state)
    for i in range(4):
        box.append(_status(f"s{i}"))
    box.ack(2)
    state.close()  # as if the agent died before any flush: the acked rows are still there
    state2 = AgentState(tmp_path)
    box2 = Outbox(state2)
    assert [m.seq for m in box2.pending()] == [1, 2, 3, 4]  # resent; the hub stores each seq once
    box2.ack(3)
    box2.flush()
    state2.close()
    box3 = Outbox(AgentState(tmp_path))
    assert [m.seq for m in box3.pending()] == [4] and box3.next_seq() == 5


def test_bound_counts_only_unacked_bytes(tmp_path: Path) -> None:
    box = Outbox(AgentState(tmp_path), max_bytes=1000)
    for i in range(8):
        box.append(_status(f"s{i}", message="x" * 80))
    box.ack(8)  # everything acked: the next append must not drop anything for their sake
    for i in range(8, 16):
        box.append(_status(f"s{i}", message="x" * 80))
    assert box.take_dropped() == 0
    assert [m.seq for m in box.pending()] == list(range(9, 17))


def test_the_wal_stays_short_and_is_rewritten_in_place(tmp_path: Path) -> None:
    state = AgentState(tmp_path)
    box = Outbox(state)
    for i in range(600):  # a busy agent: a status and an ack per round
        box.append(_status(f"svc{i % 3}"))
        box.ack(box.next_seq() - 1)
    wal = tmp_path / "agent.db-wal"
    frame = 24 + 4096
    # checkpointed every WAL_PAGES pages and started over: never the default's 1,000 pages (4 MiB)
    assert wal.stat().st_size <= 32 + (2 * WAL_PAGES) * frame
    assert state.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == WAL_PAGES
    box.flush()  # as the daemon does before closing: the last ack's delete
    state.close()
    again = Outbox(AgentState(tmp_path))
    assert again.pending() == [] and again.next_seq() == 601  # nothing lost to the checkpoints
