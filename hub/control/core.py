"""The transport-independent core of the agent channel: both fronts (gRPC, MQTT) call only this.

A front authenticates a device its own way (client certificate, or metadata / MQTT
credentials), then drives one `Session` per connection:

    session, welcome = core.open_session(device_id, hello, transport="grpc")
    send(welcome); for m in core.outgoing(session): send(m)     # desired state at once
    on every AgentMessage:  core.submit(session, msg, send)      # stored in a batch; send(ack) after commit
                            while core.congested(): stop reading until core.on_drained fires
    on core listener(device_id) (any thread): if not core.is_allowed(session): close
                                              else: for m in core.outgoing(session): send(m)
    on disconnect:          core.close_session(session)

Desired state is level-triggered: `outgoing` returns the device's current DesiredState
whenever its revision is newer than the one this session last sent, so a lost
notification only delays, never loses, an update. Every method is thread-safe (the
store serializes SQL), so fronts on event loops in different threads can share one core.
Agent messages are stored by group commit (hub/control/group_commit.py): many per
transaction, each session acked once per batch, after the commit.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hub.control.group_commit import GroupCommit, Reply
from hub.control.session import Session
from hub.errors import HubError
from hub.serve_config import DEFAULT_RECONNECTS_PER_S
from protos.edgeport.v1 import agent_pb2

if TYPE_CHECKING:
    from hub.deployments import DeploymentService
    from hub.fleet import FleetService
    from hub.store.db import Database
    from hub.telemetry import TelemetryService

log = logging.getLogger("hub.control")

DeviceListener = Callable[[str], None]

RECONNECT_SPREAD_MAX_S = 120.0  # bigger fleets get this: beyond it, waiting costs more than the burst
FLEET_SIZE_TTL_S = 30.0  # how long a count of enrolled devices serves every Welcome


@dataclass
class _LogWait:
    """A pending LogRequest: filled by the device's LogChunk."""

    event: threading.Event = field(default_factory=threading.Event)
    lines: list[str] = field(default_factory=list)


class ControlCore:
    """What every front calls: sessions, acks, desired state, one-shot requests, change listeners."""

    def __init__(
        self,
        fleet: FleetService,
        deployments: DeploymentService,
        telemetry: TelemetryService,
        database: Database,
        *,
        heartbeat_interval_s: int = 10,
        telemetry_interval_s: int = 60,
        reconnects_per_s: float = DEFAULT_RECONNECTS_PER_S,
    ) -> None:
        self.fleet = fleet
        self.deployments = deployments
        self.telemetry = telemetry
        self.heartbeat_interval_s = heartbeat_interval_s
        self.telemetry_interval_s = telemetry_interval_s
        self.reconnects_per_s = reconnects_per_s
        self._fleet_size: tuple[float, int] | None = None  # (monotonic time read, enrolled devices)
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._listeners: list[DeviceListener] = []
        self._sessions: dict[str, Session] = {}  # device -> its newest session
        self._queued: dict[str, list[agent_pb2.HubMessage]] = {}  # one-shot messages per device
        self._log_waits: dict[str, _LogWait] = {}
        self.desired_pushes = 0  # DesiredStates handed to fronts to send (hub/metrics.py); GIL-approximate
        self.database = database
        self.ingest = GroupCommit(database, self._store, on_rollback=fleet.forget_seqs)

    # ---- authentication (fronts call one of these before open_session) ----

    def authenticate_certificate(self, certificate_pem: bytes) -> str:
        """Device id for a verified client certificate (CN); raises Unauthorized if revoked or unknown."""
        return self.fleet.authenticate_certificate(certificate_pem)

    def authenticate_credential(self, device_id: str, credential: str) -> str:
        """Device id for the --insecure / MQTT path; raises Unauthorized when the credential is wrong."""
        return self.fleet.authenticate_credential(device_id, credential)

    # ---- sessions ----

    def open_session(self, device_id: str, hello: agent_pb2.Hello, transport: str) -> tuple[Session, agent_pb2.Welcome]:
        """Record the Hello (inventory, running services, online) and return the session and its Welcome."""
        session = Session(device_id=device_id, transport=transport, id=next(self._ids))
        with self._lock:
            self._sessions[device_id] = session
        acked = self.fleet.device_connected(device_id, hello, transport)
        for report in hello.services:
            self.deployments.record_report(device_id, report)
        welcome = agent_pb2.Welcome(
            device_id=device_id,
            acked_seq=acked,
            heartbeat_interval_s=self.heartbeat_interval_s,
            telemetry_interval_s=self.telemetry_interval_s,
            reconnect_spread_ms=self.reconnect_spread_ms(),
        )
        return session, welcome

    def reconnect_spread_ms(self) -> int:
        """How long a fleet that loses this hub at once should spread its reconnections over, in ms.

        Every enrolled device may be among them (a hub restart drops them all), at `reconnects_per_s`;
        the count is read at most every FLEET_SIZE_TTL_S, not for each of a reconnecting fleet's Hellos.
        """
        now = time.monotonic()
        cached = self._fleet_size
        if cached is None or now - cached[0] > FLEET_SIZE_TTL_S:
            cached = self._fleet_size = (now, self.fleet.enrolled_count())
        return int(min(RECONNECT_SPREAD_MAX_S, cached[1] / self.reconnects_per_s) * 1000)

    def close_session(self, session: Session) -> None:
        """The connection ended: the device is offline unless a newer session replaced this one."""
        session.closed = True
        with self._lock:
            current = self._sessions.get(session.device_id)
            if current is not session:
                return
            del self._sessions[session.device_id]
        self.fleet.device_disconnected(session.device_id)

    def is_allowed(self, session: Session) -> bool:
        """False once the device was revoked (or deleted): the front must end the session."""
        return self.fleet.is_active(session.device_id)

    def transport_of(self, device_id: str) -> str | None:
        """The transport of the device's live session ("grpc", "mqtt"), None when it has none."""
        with self._lock:
            session = self._sessions.get(device_id)
        return session.transport if session is not None else None

    def is_online(self, device_id: str) -> bool:
        """Whether some front holds a live session for the device."""
        with self._lock:
            return device_id in self._sessions

    # ---- agent -> hub ----

    def submit(self, session: Session, message: agent_pb2.AgentMessage | bytes, reply: Reply) -> None:
        """Queue one AgentMessage (parsed, or serialized for the writer to parse) for the next group commit;
        `reply(ack)` follows the commit (writer thread).

        Never blocks; a front reading faster than the hub stores should pause while `congested()`.
        """
        self.ingest.submit(session, message, reply)

    def congested(self, points: bool = True) -> bool:
        """Whether so many messages wait to be stored that fronts should stop reading until `on_drained`.

        `points=False` leaves out the queued-telemetry-points mark (see GroupCommit.congested).
        """
        return self.ingest.congested(points)

    def on_drained(self, callback: Callable[[], None]) -> None:
        """Call `callback()` (any thread) whenever a congestion ends."""
        self.ingest.on_drained(callback)

    def close(self) -> None:
        """Store every message already submitted (hub shutdown)."""
        self.ingest.close()

    def handle(self, session: Session, message: agent_pb2.AgentMessage) -> agent_pb2.HubMessage | None:
        """Store one AgentMessage now, in its own transaction; return the cumulative Ack (None for seq 0)."""
        with self.database.transaction():
            acked = self._store(session, message)
        return None if acked is None else agent_pb2.HubMessage(sent_at_ms=_now_ms(), ack=agent_pb2.Ack(seq=acked))

    def _store(self, session: Session, message: agent_pb2.AgentMessage) -> int | None:
        """Store one AgentMessage once per (device, seq) inside the caller's transaction; the cumulative ack."""
        device = session.device_id
        kind = message.WhichOneof("body")
        if message.seq == 0:  # untracked: handled, never acked
            self._apply(device, kind, message)
            return None
        floor = None
        if not session.floor_set:
            # The agent replays its outbox oldest first after Hello, so anything older than
            # the first seq of a session is gone from the device (outbox overflow): don't wait for it.
            session.floor_set = True
            floor = message.seq - 1
        fresh, acked = self.fleet.record_seq(device, message.seq, floor=floor)
        if fresh:
            try:
                self._apply(device, kind, message)
            except HubError as exc:  # refused for good (a resend would be too): acked, so the device moves on
                log.warning("device %s sent a message the hub refused: %s", device, exc.message)
        return acked

    def _apply(self, device: str, kind: str | None, message: agent_pb2.AgentMessage) -> None:
        if kind == "status":
            self.deployments.record_status(device, message.status)
            if message.status.desired_revision:  # the status doubles as the desired state's ack
                self.fleet.record_applied_revision(device, message.status.desired_revision)
        elif kind == "heartbeat":
            self.fleet.record_heartbeat(device, message.heartbeat)
        elif kind == "telemetry":
            self.telemetry.ingest(device, message.telemetry)
        elif kind == "desired_ack":
            self.fleet.record_applied_revision(device, message.desired_ack.revision)
        elif kind == "desired_refused":  # a forged, misdirected or replayed state: the device kept what it ran
            log.warning("device %s refused desired state revision %d: %s", device,
                        message.desired_refused.revision, message.desired_refused.reason)  # fmt: skip
            self.fleet.record_refusal(device, message.desired_refused)
        elif kind == "logs":
            self._deliver_logs(message.logs)
        elif kind == "profile":
            self.telemetry.record_profile(device, message.profile)
        elif kind == "hello":  # a Hello after the first message is a protocol slip; ignore it
            pass

    # ---- hub -> agent ----

    def desired_state(self, device_id: str) -> agent_pb2.SignedDesiredState:
        """The complete DesiredState the device should run now (all services targeting it), signed for it."""
        return self.deployments.signed_desired_state(device_id)

    def desired_states(self, device_ids: list[str]) -> dict[str, agent_pb2.SignedDesiredState]:
        """`desired_state` of many devices at once; a device left out is not active (revoked, unknown)."""
        return self.deployments.signed_desired_states(device_ids)

    def outgoing(
        self, session: Session, desired: agent_pb2.SignedDesiredState | None = None
    ) -> list[agent_pb2.HubMessage]:
        """Messages this session should send now: a newer DesiredState, then queued one-shot requests.

        `desired`: the device's DesiredState when the caller already has it (from `desired_states`).
        """
        out: list[agent_pb2.HubMessage] = []
        if desired is None:
            desired = self.desired_state(session.device_id)
        if desired.revision != session.sent_revision:
            session.sent_revision = desired.revision
            out.append(agent_pb2.HubMessage(sent_at_ms=_now_ms(), desired=desired))
            self.desired_pushes += 1
        with self._lock:
            if self._sessions.get(session.device_id) is session:
                out.extend(self._queued.pop(session.device_id, []))
        return out

    def request_logs(self, device_id: str, service: str, lines: int = 100, timeout: float = 5.0) -> list[str] | None:
        """Ask a connected device for a runtime's last log lines; None if offline or no answer in time.

        Blocks the calling thread (API handlers run it in a worker thread).
        """
        if not self.is_online(device_id):
            return None
        request_id = uuid.uuid4().hex
        wait = _LogWait()
        request = agent_pb2.LogRequest(request_id=request_id, service=service, lines=lines)
        with self._lock:
            self._log_waits[request_id] = wait
            self._queued.setdefault(device_id, []).append(
                agent_pb2.HubMessage(sent_at_ms=_now_ms(), log_request=request)
            )
        self.notify(device_id)
        try:
            return wait.lines if wait.event.wait(timeout) else None
        finally:
            with self._lock:
                self._log_waits.pop(request_id, None)

    def _deliver_logs(self, chunk: agent_pb2.LogChunk) -> None:
        with self._lock:
            wait = self._log_waits.get(chunk.request_id)
        if wait is not None:
            wait.lines = list(chunk.lines)
            wait.event.set()

    # ---- change notification ----

    def add_listener(self, listener: DeviceListener) -> Callable[[], None]:
        """Call `listener(device_id)` (from any thread) when a device has something new; returns an unsubscribe."""
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def notify(self, device_id: str) -> None:
        """Tell every front that `device_id` has new desired state, a request, or changed standing."""
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(device_id)

    def notify_many(self, device_ids: list[str]) -> None:
        """`notify` for each device."""
        for device_id in device_ids:
            self.notify(device_id)


def _now_ms() -> int:
    return int(time.time() * 1000)
