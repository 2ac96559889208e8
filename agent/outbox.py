"""Store-and-forward of AgentMessages: sequence-numbered, in SQLite, bounded, trimmed by the hub's acks.

Every message that must reach the hub (statuses, telemetry, log chunks, acks of desired state)
is appended here first and gets the next `seq` (which only grows, across restarts). The link
sends what is pending, oldest first, after every (re)connect; the hub's cumulative Ack (or
Welcome.acked_seq) deletes what it has stored. When the outbox exceeds its byte bound the
oldest entries are dropped and counted; the count travels in the next TelemetryBatch.dropped.
"""

from __future__ import annotations

import time

from agent.state import AgentState
from protos.edgeport.v1 import agent_pb2

DEFAULT_MAX_BYTES = 8 * 1024 * 1024


class Outbox:
    """The durable queue of unsent AgentMessages of one agent."""

    def __init__(self, state: AgentState, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.state = state
        self.max_bytes = max_bytes

    def append(self, message: agent_pb2.AgentMessage) -> int:
        """Give `message` the next seq, store it, drop the oldest entries past the bound; return the seq."""
        with self.state.lock:
            seq = self.next_seq()
            message.seq = seq
            if not message.sent_at_ms:
                message.sent_at_ms = int(time.time() * 1000)
            body = message.SerializeToString()
            conn = self.state.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT INTO outbox (seq, kind, body, size) VALUES (?, ?, ?, ?)",
                    (seq, message.WhichOneof("body") or "", body, len(body)),
                )
                conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES ('next_seq', ?)", (str(seq + 1),))
                self._trim_to_bound()
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return seq

    def _trim_to_bound(self) -> None:
        conn = self.state.conn
        total = conn.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()[0]
        if total <= self.max_bytes:
            return
        dropped = 0
        # Oldest first; the newest entry always stays (a single oversize message is still sent).
        for seq, size in conn.execute("SELECT seq, size FROM outbox ORDER BY seq").fetchall()[:-1]:
            if total <= self.max_bytes:
                break
            conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            total -= size
            dropped += 1
        if dropped:
            before = int(self.state.get("outbox_dropped", "0") or 0)
            conn.execute(
                "INSERT OR REPLACE INTO kv (key, value) VALUES ('outbox_dropped', ?)", (str(before + dropped),)
            )

    def next_seq(self) -> int:
        """The seq the next appended message will get (first one: 1)."""
        return int(self.state.get("next_seq", "1") or 1)

    def first_pending_seq(self) -> int:
        """Seq of the oldest unacknowledged message, or the next seq when nothing is pending."""
        with self.state.lock:
            row = self.state.conn.execute("SELECT MIN(seq) FROM outbox").fetchone()
        return row[0] if row and row[0] is not None else self.next_seq()

    def pending(self, after: int = 0, limit: int = 256) -> list[agent_pb2.AgentMessage]:
        """Stored messages with seq > `after`, oldest first."""
        with self.state.lock:
            rows = self.state.conn.execute(
                "SELECT body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
            ).fetchall()
        return [agent_pb2.AgentMessage.FromString(r[0]) for r in rows]

    def ack(self, seq: int) -> int:
        """The hub stored every message with seq <= `seq`: delete them; return how many went.

        An ack at or past our next seq (the agent's state was restored from an older copy) moves the
        next seq beyond it, so new messages are never mistaken by the hub for ones it already has.
        """
        with self.state.lock:
            if seq >= self.next_seq():
                self.state.put("next_seq", str(seq + 1))
            return self.state.conn.execute("DELETE FROM outbox WHERE seq <= ?", (seq,)).rowcount

    def take_dropped(self) -> int:
        """How many messages the bound dropped since the last call (and reset the count)."""
        with self.state.lock:
            n = int(self.state.get("outbox_dropped", "0") or 0)
            if n:
                self.state.put("outbox_dropped", "0")
        return n

    def size(self) -> tuple[int, int]:
        """(messages, bytes) pending."""
        with self.state.lock:
            count, total = self.state.conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
        return count, total
