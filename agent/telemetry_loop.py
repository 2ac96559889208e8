"""Telemetry rounds: every interval, the agent's system figures and each runtime's statistics go into the outbox.

Through the outbox, so points made while the link is down reach the hub, in order, once it is back. The
interval is the one `agent run` was given, else the one the hub names in its Welcome; a new interval
applies to the round already waiting. The first round waits a random share of the interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from agent import timers
from agent.supervisor import RuntimeProcess
from agent.telemetry import TelemetryCollector
from protos.edgeport.v1 import agent_pb2

DEFAULT_TELEMETRY_S = 60  # when the hub names none; hubs say 60 by default too


class TelemetryRounds:
    """The telemetry loop of one agent.

    `runtimes` gives the running runtimes by service, `queue` hands a message to the outbox, `dropped`
    says how many points the bounded outbox had to drop since the last round, `labels` go on every point.
    `figures_in_memory`: the collector answers without blocking (a fleet's shared figures), so it is called
    on the event loop rather than through the thread pool.
    """

    def __init__(
        self,
        collector: TelemetryCollector,
        runtimes: Callable[[], Mapping[str, RuntimeProcess]],
        queue: Callable[[agent_pb2.AgentMessage], None],
        dropped: Callable[[], int],
        *,
        labels: Mapping[str, str],
        interval_s: int = DEFAULT_TELEMETRY_S,
        figures_in_memory: bool = False,
    ) -> None:
        self.collector = collector
        self.runtimes = runtimes
        self.queue = queue
        self.dropped = dropped
        self.labels = dict(labels)
        self.interval_s = interval_s
        self.figures_in_memory = figures_in_memory
        self._due = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None

    def set_interval(self, seconds: int) -> None:
        """The hub's interval: the next round comes that long from now, not after the interval in force before."""
        if seconds == self.interval_s:
            return
        self.interval_s = seconds
        if self._timer is not None:
            self._timer.cancel()
            self._timer = timers.call_later(asyncio.get_running_loop(), seconds, self._due.set)

    async def run(self) -> None:
        """Send a round every interval until cancelled (the first after a random share of it)."""
        loop = asyncio.get_running_loop()
        try:
            first = True
            while True:
                self._due.clear()
                delay = self.interval_s * (timers.random_phase() if first else 1.0)
                first = False
                self._timer = timers.call_later(loop, delay, self._due.set)
                await self._due.wait()
                await self.send_round()
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    @property
    def waiting(self) -> bool:
        """Whether a round's timer is set (none is left behind once the loop ends)."""
        return self._timer is not None

    async def send_round(self) -> None:
        """One round: system and runtime points into the outbox."""
        points = self.collector.system_points()
        for name, proc in list(self.runtimes().items()):
            if proc.alive():
                if self.figures_in_memory:
                    points += self.collector.runtime_points(name, proc.spec.port, proc.pid)
                else:  # a scrape is an HTTP request: off the loop
                    points += await asyncio.to_thread(self.collector.runtime_points, name, proc.spec.port, proc.pid)
        for p in points:
            p.labels.update(self.labels)
        batch = agent_pb2.TelemetryBatch(points=points, dropped=self.dropped())
        self.queue(agent_pb2.AgentMessage(telemetry=batch))
