"""Store-and-forward of AgentMessages: sequence-numbered, in SQLite, bounded, trimmed by the hub's acks.

Every message that must reach the hub (statuses, telemetry, log chunks, acks of desired state)
is appended here first and gets the next `seq` (which only grows, across restarts). The link
sends what is pending, oldest first, after every (re)connect; the hub's cumulative Ack (or
Welcome.acked_seq) deletes what it has stored. When the outbox exceeds its byte bound the
oldest entries are dropped and counted; the count travels in the next TelemetryBatch.dropped.

An ack takes effect in memory at once; its rows are deleted in the next append's transaction
(or when the state closes), not in a commit of their own: a telemetry round trip was two
commits. Should the agent die in between, the next start resends those messages, which the
hub already has and stores once (it deduplicates by seq).
"""

from __future__ import annotations

import time
from collections import OrderedDict

from agent.state import AgentState
from protos.edgeport.v1 import agent_pb2

DEFAULT_MAX_BYTES = 8 * 1024 * 1024
RECENT = 64  # newest appended messages kept in memory: the sender reads them back without SQLite or parsing


class Outbox:
    """The durable queue of unsent AgentMessages of one agent.

    The next seq, the oldest pending seq and the pending byte total are kept in memory (the state is this
    agent's alone), so an append is one insert plus the next-seq row in one transaction, and an ack no
    transaction of its own (its delete goes with the next append).
    """

    def __init__(self, state: AgentState, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.state = state
        self.max_bytes = max_bytes
        with state.lock:
            low, high, total = state.conn.execute(
                "SELECT MIN(seq), MAX(seq), COALESCE(SUM(size), 0) FROM outbox"
            ).fetchone()
        # The stored next seq, but never at or below a stored message (state restored from an odd copy).
        self._next = max(int(state.get("next_seq", "1") or 1), (high or 0) + 1)
        self._first = low if low is not None else self._next
        self._bytes = int(total)
        self._deleted_to = self._first - 1  # rows up to here are gone from the table; acked ones above wait
        self._recent: OrderedDict[int, agent_pb2.AgentMessage] = OrderedDict()  # seq -> message, as stored

    def append(self, message: agent_pb2.AgentMessage) -> int:
        """Give `message` the next seq, store it, drop the oldest entries past the bound; return the seq."""
        return self.append_many([message])[0]

    def append_many(self, messages: list[agent_pb2.AgentMessage]) -> list[int]:
        """`append` for several messages in one transaction (consecutive seqs, in list order).

        The outbox keeps the message objects (their seq set): callers must not change them afterwards.
        """
        if not messages:
            return []
        with self.state.lock:
            seq = self._next
            now = int(time.time() * 1000)
            rows = []
            for message in messages:
                message.seq = seq
                if not message.sent_at_ms:
                    message.sent_at_ms = now
                body = message.SerializeToString()
                rows.append((seq, message.WhichOneof("body") or "", body, len(body)))
                seq += 1
            added = sum(r[3] for r in rows)
            try:
                with self.state.transaction() as conn:
                    self._delete_acked()
                    conn.executemany("INSERT INTO outbox (seq, kind, body, size) VALUES (?, ?, ?, ?)", rows)
                    self.state.put("next_seq", str(seq))
                    self._bytes += added
                    self._next = seq
                    if self._bytes > self.max_bytes:
                        self._trim_to_bound()
            except BaseException:
                self._resync()
                raise
            if self._first > rows[0][0]:
                self._first = rows[0][0]
            for message in messages:
                self._recent[message.seq] = message
            while len(self._recent) > RECENT:
                self._recent.popitem(last=False)
            return [r[0] for r in rows]

    def _delete_acked(self) -> None:
        """Delete the rows acked since the last delete (inside the caller's transaction)."""
        acked = self._first - 1
        if acked > self._deleted_to:
            sizes = self.state.conn.execute("DELETE FROM outbox WHERE seq <= ? RETURNING size", (acked,)).fetchall()
            self._bytes -= sum(r[0] for r in sizes)
            self._deleted_to = acked

    def flush(self) -> None:
        """Delete acked rows now (before the state closes; otherwise the next append does it)."""
        with self.state.lock:
            if self._first - 1 > self._deleted_to:
                with self.state.transaction():
                    self._delete_acked()

    def _resync(self) -> None:
        """Re-read the figures kept in memory (after a failed write); acked rows not yet deleted stay acked."""
        acked = self._first - 1
        low, high, total = self.state.conn.execute(
            "SELECT MIN(seq), MAX(seq), COALESCE(SUM(size), 0) FROM outbox"
        ).fetchone()
        self._next = max(int(self.state.get("next_seq", "1") or 1), (high or 0) + 1)
        self._first = max(low if low is not None else self._next, acked + 1)
        self._deleted_to = (low - 1) if low is not None else self._next - 1
        self._bytes = int(total)

    def _trim_to_bound(self) -> None:
        conn = self.state.conn
        total = self._bytes
        dropped = 0
        # Oldest first; the newest entry always stays (a single oversize message is still sent).
        for seq, size in conn.execute("SELECT seq, size FROM outbox ORDER BY seq").fetchall()[:-1]:
            if total <= self.max_bytes:
                break
            conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            total -= size
            dropped += 1
        self._bytes = total
        self._recent.clear()  # what was dropped must not be sent from memory either
        if dropped:
            before = int(self.state.get("outbox_dropped", "0") or 0)
            self.state.put("outbox_dropped", str(before + dropped))
            row = conn.execute("SELECT MIN(seq) FROM outbox").fetchone()
            self._first = row[0] if row[0] is not None else self._next
            self._deleted_to = self._first - 1

    def next_seq(self) -> int:
        """The seq the next appended message will get (first one: 1)."""
        return self._next

    def first_pending_seq(self) -> int:
        """Seq of the oldest unacknowledged message, or the next seq when nothing is pending."""
        return min(self._first, self._next)

    def pending(self, after: int = 0, limit: int = 256) -> list[agent_pb2.AgentMessage]:
        """Stored messages with seq > `after`, oldest first."""
        if after + 1 >= self._next:  # nothing newer was appended: no need to ask SQLite
            return []
        with self.state.lock:
            start = max(after + 1, self._first)
            if start in self._recent:  # the newest ones, contiguous to the end: straight from memory
                return [self._recent[s] for s in range(start, min(self._next, start + limit))]
            rows = self.state.conn.execute(
                "SELECT body FROM outbox WHERE seq >= ? ORDER BY seq LIMIT ?", (start, limit)
            ).fetchall()
        return [agent_pb2.AgentMessage.FromString(r[0]) for r in rows]

    def ack(self, seq: int) -> int:
        """The hub stored every message with seq <= `seq`: delete them; return how many went.

        An ack at or past our next seq (the agent's state was restored from an older copy) moves the
        next seq beyond it, so new messages are never mistaken by the hub for ones it already has.
        """
        with self.state.lock:
            if seq >= self._next:
                self.state.put("next_seq", str(seq + 1))
                self._next = seq + 1
            if seq < self._first:  # already trimmed (a repeated or older ack): nothing to delete
                return 0
            gone = min(seq, self._next - 1) - self._first + 1  # pending seqs are consecutive from _first
            self._first = seq + 1
            while self._recent and next(iter(self._recent)) <= seq:
                self._recent.popitem(last=False)
            return max(gone, 0)

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
            count, total = self.state.conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox WHERE seq >= ?", (self._first,)
            ).fetchone()
        return count, total
