"""The way from the reconciler's service statuses and the hub's Acks to the outbox.

Progress statuses (Pending, Pulling, Starting, Restarting) linger a moment, and a newer status of the
same service replaces a waiting one: the hub keeps only the latest per device and service, so a
superseded status would cost a message and a write on both sides for nothing. Settled phases go at
once and take the waiting ones with them, in order. A desired state's ack rides on the statuses it
causes; a burst of hub Acks is applied to the outbox once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from agent.outbox import Outbox
from protos.edgeport.v1 import agent_pb2

# A progress status waits this long before it goes into the outbox (see the module docstring).
DEFAULT_STATUS_LINGER_S = 1.0
# While progress keeps coming without a settled phase (a long pull, a device busy with a fleet-wide rollout)
# each timed flush doubles the next linger, up to this; a settled phase starts again at the configured one.
# At 10,000 agents on 2 cores a deploy took 2-3 s per agent: three status messages each with a fixed 1 s
# linger, two with this.
MAX_STATUS_LINGER_S = 4.0
SETTLED_PHASES = frozenset({agent_pb2.HEALTHY, agent_pb2.FAILED, agent_pb2.ROLLED_BACK, agent_pb2.REMOVED})


class StatusReports:
    """Statuses and acks of one agent on their way into its outbox.

    `desired_revision` reads the revision of the desired state taken in (every status carries it);
    `outbox_changed` wakes the sender; `say` takes one line per phase change; `linger_s` 0 sends every
    status at once.
    """

    def __init__(
        self,
        outbox: Outbox,
        desired_revision: Callable[[], int],
        outbox_changed: asyncio.Event,
        say: Callable[[str], None],
        linger_s: float = DEFAULT_STATUS_LINGER_S,
    ) -> None:
        self.outbox = outbox
        self.desired_revision = desired_revision
        self.outbox_changed = outbox_changed
        self.say = say
        self.linger_s = linger_s
        self.linger = linger_s  # the next progress linger (grows while progress lasts)
        self.held: dict[str, agent_pb2.DeploymentStatus] = {}  # progress statuses waiting out the linger
        self.held_flush: asyncio.TimerHandle | None = None
        self.desired_unacked = False  # a desired state came that no status or DesiredStateAck has acknowledged
        self._phases: dict[str, tuple[int, int]] = {}
        self._ack_to = 0  # the highest hub Ack not yet applied to the outbox (applied once per burst)
        self._ack_pending = False
        self._closed = False  # the state database was closed (late callbacks must not touch it)

    def report(self, status: agent_pb2.DeploymentStatus) -> None:
        """A service status from the reconciler: into the outbox (progress ones after a linger), and one line
        when the phase changed."""
        self.held.pop(status.service, None)  # re-inserted last: held statuses keep the order they were made in
        self.held[status.service] = status
        # A request for a TLS certificate goes at once too: the deploy waits for the hub's answer to it.
        if status.phase in SETTLED_PHASES or status.HasField("tls_request") or self.linger_s <= 0:
            self.flush()
            self.linger = self.linger_s
        elif self.held_flush is None:
            try:
                self.held_flush = asyncio.get_running_loop().call_later(self.linger, self.flush_progress)
            except RuntimeError:  # no loop (a direct call): nothing could flush it later
                self.flush()
        key = (status.generation, status.phase)
        if self._phases.get(status.service) != key or status.phase == agent_pb2.PULLING:
            self._phases[status.service] = key
            phase = agent_pb2.Phase.Name(status.phase)
            uri = f" {status.scoring_uri}" if status.scoring_uri and status.phase == agent_pb2.HEALTHY else ""
            self.say(f"service {status.service} generation {status.generation}: {phase}{uri} {status.message}".rstrip())

    def flush_progress(self) -> None:
        """The linger ran out: send what is held; while progress lasts, wait longer before the next."""
        self.held_flush = None
        progress = bool(self.held)
        self.flush()
        base = self.linger_s
        self.linger = min(self.linger * 2, max(MAX_STATUS_LINGER_S, base)) if progress else base

    def acknowledge_desired(self) -> None:
        """A desired state came in: its ack rides on the statuses it causes, or goes alone after the linger.

        Every status names the revision the agent has taken in (`desired_revision`), and the hub takes that
        as the ack: one message fewer per deploy on each side. A desired state that changes nothing here
        makes no status, so a DesiredStateAck follows when the linger runs out. Should the agent stop first,
        its next Hello names the revision.
        """
        self.desired_unacked = True
        if self.linger_s <= 0:
            self.flush()
        elif self.held_flush is None:
            self.held_flush = asyncio.get_running_loop().call_later(self.linger, self.flush_progress)

    def refuse(self, revision: int, reason: str, applied_revision: int) -> None:
        """A desired state was refused: the hub hears why (after what is held, so order is kept)."""
        self.flush()
        refused = agent_pb2.DesiredStateRefused(revision=revision, reason=reason, applied_revision=applied_revision)
        self.outbox.append(agent_pb2.AgentMessage(desired_refused=refused))
        self.outbox_changed.set()

    def flush(self) -> None:
        """Put the held statuses (or, with none, the ack a desired state is owed) into the outbox, in one
        transaction."""
        if self.held_flush is not None:
            self.held_flush.cancel()
            self.held_flush = None
        if self._closed or not (self.held or self.desired_unacked):
            return
        revision = self.desired_revision()
        held, self.held = list(self.held.values()), {}
        messages = []
        for status in held:
            status.desired_revision = revision
            messages.append(agent_pb2.AgentMessage(status=status))
        if not messages:
            messages.append(agent_pb2.AgentMessage(desired_ack=agent_pb2.DesiredStateAck(revision=revision)))
        self.desired_unacked = False
        self.outbox.append_many(messages)
        self.outbox_changed.set()

    def ack(self, seq: int) -> None:
        """A hub Ack: applied to the outbox once per burst of Acks (one delete instead of one per message)."""
        self._ack_to = max(self._ack_to, seq)
        if not self._ack_pending:
            self._ack_pending = True
            asyncio.get_running_loop().call_soon(self._apply_acks)

    def _apply_acks(self) -> None:
        self._ack_pending = False
        if not self._closed:
            self.outbox.ack(self._ack_to)

    def close(self) -> None:
        """The state database is about to close: what is held goes in now, and late callbacks do nothing."""
        self.flush()
        self._closed = True
