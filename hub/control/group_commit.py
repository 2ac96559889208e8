"""GroupCommit: agent messages stored in batches, one SQLite transaction per batch, acked after the commit.

A transaction per message caps the hub at about a thousand messages a second, far below
what a fleet of thousands sends (telemetry, heartbeats, status reports). Fronts hand each
message to `submit` and go on reading; one writer thread takes everything queued (up to
`max_batch`), stores each message in its own savepoint inside one transaction, commits, and
only then sends each session ONE cumulative ack: the newest, which covers every earlier one.
An ack therefore never runs ahead of what is on disk, and a batch that fails to commit
sends no acks at all, so the agents resend and (device, seq) deduplication stores each
message once.

Acks are delayed, as TCP delays its ACKs: a session's ack goes `ack_delay` seconds after the
first message it covers was stored, and covers everything stored by then. An ack only lets the
agent trim its outbox, so a late one costs nothing but a few rows kept a little longer (and a
few more resends, deduplicated, should the link drop meanwhile); in a rollout a device's progress
status and its Healthy then share one ack, and a device sending telemetry every second gets one
ack every two.

A front may submit a message still serialized; the writer parses it just before storing it.
A queued parsed message costs ~10x its wire size (telemetry points live in protobuf's native
arena), and a front with one stream per device cannot stop every stream before it has read
one message each: 10,000 gRPC streams each submitting one 50-point batch at a congestion
grew the hub's heap by ~160 MiB, where their wire bytes are ~25 MiB.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

from hub.control.session import Session
from hub.errors import HubError
from protos.edgeport.v1 import agent_pb2

if TYPE_CHECKING:
    from hub.store.db import Database

log = logging.getLogger("hub.control.ingest")

Reply = Callable[[agent_pb2.HubMessage], None]
StoreOne = Callable[[Session, agent_pb2.AgentMessage], int | None]

# Bounds how long one transaction holds the database (~15 ms): the API and the gRPC front's
# event loop wait on it. Past a few hundred, bigger batches save little more.
DEFAULT_MAX_BATCH = 500
# Queued messages past which fronts stop reading: ~0.15 s of work. It also bounds the hub's memory, but
# a message count alone bounds it loosely: a parsed telemetry point holds ~0.5 KiB in protobuf's native
# arena (never seen by Python's allocator), so 2,000 queued 50-point messages grew one malloc arena of a
# 10,000-agent MQTT hub by 50 MiB. Queued points therefore have their own mark, ~5 MiB of them.
DEFAULT_HIGH_WATER = 2_000
DEFAULT_HIGH_WATER_POINTS = 10_000
# How long a session's ack may wait for more of its messages to cover (see the module docstring). At 10,000
# agents on 2 cores a deploy's progress status and Healthy came 1-5 s apart.
DEFAULT_ACK_DELAY_S = 2.0


@dataclass(slots=True)
class _Item:
    session: Session
    message: agent_pb2.AgentMessage | bytes  # bytes: still serialized, parsed by the writer
    reply: Reply
    points: int  # telemetry points the message carries parsed (what its size grows with); 0 while serialized


@dataclass(slots=True)
class _HeldAck:
    """A session's ack waiting out the ack delay: the reply of its newest stored message, not the item (a parsed
    telemetry message held 2 s more doubled a 10,000-agent hub's peak)."""

    reply: Reply
    device: str
    acked: int
    due: float  # monotonic time: the first covered message's store time plus the delay


def _points(message: agent_pb2.AgentMessage | bytes) -> int:
    if isinstance(message, bytes):
        return 0
    return len(message.telemetry.points) if message.WhichOneof("body") == "telemetry" else 0


class GroupCommit:
    """Queue + writer thread; `store_one` stores a message (inside the batch's transaction) and returns its ack."""

    def __init__(
        self,
        database: Database,
        store_one: StoreOne,
        *,
        on_rollback: Callable[[set[str]], None] = lambda devices: None,
        max_batch: int = DEFAULT_MAX_BATCH,
        high_water: int = DEFAULT_HIGH_WATER,
        high_water_points: int = DEFAULT_HIGH_WATER_POINTS,
        ack_delay: float = DEFAULT_ACK_DELAY_S,
    ) -> None:
        self.database = database
        self.store_one = store_one
        self.on_rollback = on_rollback
        self.max_batch = max_batch
        self.high_water = high_water
        self.high_water_points = high_water_points
        self._queue: deque[_Item] = deque()
        self._queued_points = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._busy = False  # the writer holds a batch taken off the queue
        self._congested = False  # past high water; cleared once the backlog is down to half of it
        self._congested_messages = False  # the same for the message mark alone
        self._drained: list[Callable[[], None]] = []
        self.ack_delay = ack_delay
        # session id -> its held ack, in order of due time since an entry keeps the due time of the first
        # message it covers (writer thread only)
        self._held_acks: OrderedDict[int, _HeldAck] = OrderedDict()
        self._flush_acks = False  # wait_idle asks the writer to send the held acks now
        self.stats = {"messages": 0, "batches": 0, "failed_batches": 0}

    def submit(self, session: Session, message: agent_pb2.AgentMessage | bytes, reply: Reply) -> None:
        """Queue one message (any thread, never blocks); `reply(ack)` is called from the writer after commit.

        `message` may be the serialized AgentMessage: the writer parses it (and skips it, unacked and
        logged, if it does not parse).
        """
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hub-group-commit", daemon=True)
                self._thread.start()
            item = _Item(session, message, reply, _points(message))
            self._queue.append(item)
            self._queued_points += item.points
            if len(self._queue) == 1:
                self._cond.notify()
            if len(self._queue) > self.high_water:
                self._congested = self._congested_messages = True
            elif self._queued_points > self.high_water_points:
                self._congested = True

    def backlog(self) -> int:
        """Messages queued and not yet stored."""
        return len(self._queue)

    def congested(self, points: bool = True) -> bool:
        """True from when the backlog passed a high-water mark (messages or points) until it is back to half of both.

        `points=False`: the message mark alone, for a front that wakes every paused reader at each drain
        and so pays for each pause (the gRPC front).
        """
        return self._congested if points else self._congested_messages

    def on_drained(self, callback: Callable[[], None]) -> None:
        """Call `callback()` (writer thread) each time a congestion ends, so fronts can wait for it, not poll."""
        self._drained.append(callback)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until everything submitted so far is stored and acked, held acks sent now (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flush_acks = True
            self._cond.notify_all()
            while self._queue or self._busy or self._flush_acks:
                if self._thread is None or not self._thread.is_alive():
                    self._flush_acks = False
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Store what is queued, then stop the writer."""
        self.wait_idle(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._queue or self._stopping or self._flush_acks or self._due_acks()):
                    due = next(iter(self._held_acks.values())).due if self._held_acks else None
                    self._cond.wait(None if due is None else max(0.0, due - time.monotonic()))
                # Everything held goes once the queue is empty (its acks would be held again otherwise).
                flush = (self._flush_acks or self._stopping) and not self._queue
            if flush or self._due_acks():
                self._send_acks(flush)
                if flush:  # cleared only now: wait_idle returns once the acks are out
                    with self._cond:
                        self._flush_acks = False
                        self._cond.notify_all()
            with self._cond:
                if not self._queue:
                    if self._stopping:
                        return
                    continue
                n = min(len(self._queue), self.max_batch)
                batch = [self._queue.popleft() for _ in range(n)]
                self._queued_points -= sum(item.points for item in batch)
                self._busy = True
            try:
                self._store(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
                    drained = (
                        self._congested
                        and len(self._queue) <= self.high_water // 2
                        and self._queued_points <= self.high_water_points // 2
                    )
                    if drained:
                        self._congested = False
                    if self._congested_messages and len(self._queue) <= self.high_water // 2:
                        self._congested_messages = False
                        drained = True  # a front pausing on the message mark alone may go on
                if drained:
                    for callback in self._drained:
                        try:
                            callback()
                        except Exception:  # a front that went away; the writer must live on
                            log.debug("a drain callback failed", exc_info=True)

    def _store(self, batch: list[_Item]) -> None:
        acks: dict[int, tuple[_Item, int]] = {}  # session id -> (its last item, cumulative ack)
        try:
            with self.database.transaction():
                for item in batch:
                    message = item.message
                    if isinstance(message, bytes):
                        try:
                            message = agent_pb2.AgentMessage.FromString(message)
                        except DecodeError:  # nothing to store or ack; the front's peer sent garbage
                            log.warning("device %s sent a message that is not an AgentMessage (%d bytes); "
                                        "dropped", item.session.device_id, len(item.message))
                            continue
                    try:
                        with self.database.transaction():  # a savepoint: one bad message undoes only itself
                            acked = self.store_one(item.session, message)
                    except sqlite3.OperationalError:  # disk full, I/O error: the whole batch fails
                        raise
                    except Exception as exc:  # this message only: undone, not acked, logged; the rest go on
                        self.on_rollback({item.session.device_id})
                        detail = exc.message if isinstance(exc, HubError) else repr(exc)
                        log.warning("storing a message of device %s failed: %s", item.session.device_id, detail,
                                    exc_info=not isinstance(exc, HubError))
                        continue
                    if acked is not None:
                        acks[item.session.id] = (item, acked)
        except Exception:
            # Nothing of the batch is stored and nothing is acked: the agents resend from their outboxes.
            self.stats["failed_batches"] += 1
            log.exception("storing a batch of %d agent messages failed; the agents will resend them", len(batch))
            self.on_rollback({item.session.device_id for item in batch})
            return
        self.stats["messages"] += len(batch)
        self.stats["batches"] += 1
        due = time.monotonic() + self.ack_delay
        for session_id, (item, acked) in acks.items():
            held = self._held_acks.get(session_id)
            if held is None:
                self._held_acks[session_id] = _HeldAck(item.reply, item.session.device_id, acked, due)
            else:  # the reply of the session's latest message and its ack; the first message's due time
                held.reply, held.acked = item.reply, acked
        acks.clear()
        if self.ack_delay <= 0:
            self._send_acks(True)

    def _due_acks(self) -> bool:
        return bool(self._held_acks) and next(iter(self._held_acks.values())).due <= time.monotonic()

    def _send_acks(self, everything: bool) -> None:
        """Send the held acks that are due (all of them with `everything`); writer thread."""
        now_ms, now = int(time.time() * 1000), time.monotonic()
        while self._held_acks:
            session_id, held = next(iter(self._held_acks.items()))
            if not everything and held.due > now:
                break
            del self._held_acks[session_id]
            try:
                held.reply(agent_pb2.HubMessage(sent_at_ms=now_ms, ack=agent_pb2.Ack(seq=held.acked)))
            except Exception:  # a closed stream or broker hiccup: the agent resends, dedup absorbs it
                log.debug("sending an ack to device %s failed", held.device, exc_info=True)
