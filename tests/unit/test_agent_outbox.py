"""Agent outbox and state: order, bound with drop count, ack trimming, survival across restarts."""

from __future__ import annotations

from pathlib import Path

from agent.outbox import Outbox
from agent.state import AgentState, Identity, ServiceRecord
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
