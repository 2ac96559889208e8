"""The session loop: one session with the hub at a time, over whichever Link, reopened for as long as the agent runs.

Each session opens with a Hello (what runs here, the revision taken in, the first outbox message the hub has
not acked) and the hub's Welcome. Then three tasks run side by side until the link ends: the sender replays
the outbox oldest first and sends new entries as they come, the receiver hands each hub message on, and
heartbeats go when nothing else was sent for an interval. After a session ends the agent waits a pause plus a
random share of the spread the hub named, so a fleet that lost its hub at once does not return in one burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable

from agent import timers
from agent.errors import AgentError
from agent.link.base import Link, LinkClosed
from agent.outbox import Outbox
from protos.edgeport.v1 import agent_pb2

RECONNECT_MAX_S = 10.0  # short enough to be back soon after a hub restart; jitter spreads a fleet's retries
# After a session ends: at least this pause (a hub that ends sessions at once is not hammered), plus a random
# share of the hub's reconnect spread (Welcome.reconnect_spread_ms), and of at least this spread.
RECONNECT_PAUSE_S = 0.5
MIN_RECONNECT_SPREAD_S = 1.0
DEFAULT_HEARTBEAT_S = 10


def reconnect_pause(spread_s: float, share: float) -> float:
    """Seconds to wait after losing a session, `share` being drawn from [0, 1).

    A hub restart ends every session at once; without a spread its whole fleet would redo its TLS
    handshakes within the same second. The hub names the spread, sized to its fleet.
    """
    return RECONNECT_PAUSE_S + share * max(MIN_RECONNECT_SPREAD_S, spread_s)


class HubSession:
    """The sessions of one agent with its hub.

    `make_link` makes a fresh Link per session, `hello` the Hello that opens it; `outbox_changed` is set
    whenever something was appended to `outbox`. `on_welcome` and `on_message` take what the hub says;
    `say` takes the progress lines. `heartbeat_s` None: the interval the hub names in its Welcome.
    """

    def __init__(
        self,
        make_link: Callable[[], Link],
        hello: Callable[[], agent_pb2.Hello],
        outbox: Outbox,
        outbox_changed: asyncio.Event,
        on_message: Callable[[agent_pb2.HubMessage], None],
        *,
        on_welcome: Callable[[agent_pb2.Welcome], None] = lambda welcome: None,
        say: Callable[[str], None] = print,
        device_id: str = "",
        transport: str = "grpc",
        heartbeat_s: int | None = None,
        started: float | None = None,
    ) -> None:
        self.make_link = make_link
        self.hello = hello
        self.outbox = outbox
        self.outbox_changed = outbox_changed
        self.on_message = on_message
        self.on_welcome = on_welcome
        self.say = say
        self.device_id = device_id
        self.transport = transport
        self.heartbeat_fixed = heartbeat_s is not None
        self.heartbeat_s = heartbeat_s or DEFAULT_HEARTBEAT_S
        self.started = time.monotonic() if started is None else started  # heartbeats carry the uptime
        self.last_sent = 0.0  # loop time of the last message sent to the hub (heartbeats wait for quiet)

    async def run(self) -> None:
        """Open sessions until cancelled; AgentError when the hub refuses this device."""
        delay = 1.0
        down_since: float | None = None
        spread_s = 0.0  # the reconnect spread the hub named in its last Welcome
        while True:
            link = self.make_link()
            try:
                welcome = await link.open(self.hello())
            except LinkClosed as exc:
                if getattr(link, "refused", False):
                    raise AgentError(f"the hub refused this device: {exc}", 1) from None
                if down_since is None:
                    down_since = time.monotonic()
                    self.say(f"hub unreachable ({exc}); retrying")
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(RECONNECT_MAX_S, delay * 2)
                continue
            delay, down_since = 1.0, None
            spread_s = welcome.reconnect_spread_ms / 1000
            self.outbox.ack(welcome.acked_seq)
            if not self.heartbeat_fixed and welcome.heartbeat_interval_s > 0:
                self.heartbeat_s = welcome.heartbeat_interval_s
            self.on_welcome(welcome)
            self.say(f"connected to hub as device {welcome.device_id or self.device_id} ({self.transport})")
            parts = [self.sender(link, welcome.acked_seq), self.receiver(link), self.heartbeats(link)]
            tasks = [asyncio.create_task(p) for p in parts]
            try:
                # FIRST_COMPLETED: a link whose incoming() simply ends (rather than raising) ends the session too.
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                reason = next((t.exception() for t in done if t.exception() is not None), None)
                reason = reason or LinkClosed("the hub ended the session")
            finally:
                for t in tasks:
                    t.cancel()
                for t in tasks:
                    with contextlib.suppress(asyncio.CancelledError, LinkClosed, Exception):
                        await t
                await link.close()
            if getattr(link, "refused", False):
                raise AgentError(f"the hub refused this device: {reason}", 1)
            if reason is not None and not isinstance(reason, LinkClosed):
                raise reason
            pause = reconnect_pause(spread_s, random.random())
            self.say(f"disconnected from hub ({reason}); reconnecting in {pause:.1f} s")
            down_since = time.monotonic()
            await asyncio.sleep(pause)

    async def sender(self, link: Link, acked: int) -> None:
        """Replay the outbox oldest first, then send new entries as they come (each exactly in seq order)."""
        sent = acked
        while True:
            self.outbox_changed.clear()
            batch = self.outbox.pending(after=sent)
            for message in batch:
                await link.send(message)
                sent = message.seq
            if batch:
                self.last_sent = asyncio.get_running_loop().time()  # no heartbeat needed for a while
            else:  # an append sets the event (also one made between clear() and here): no timeout needed
                await self.outbox_changed.wait()

    async def receiver(self, link: Link) -> None:
        """Hand every message from the hub on, until the link ends."""
        async for message in link.incoming():
            self.on_message(message)

    async def heartbeats(self, link: Link) -> None:
        """A heartbeat when nothing else went to the hub for an interval, as MQTT's keep-alive sends PINGREQ: any
        message tells the hub the agent is there (it records when it last heard from each device).

        Heartbeats go straight to the link (seq 0): an old heartbeat is worth nothing after an outage. The
        Hello stands for the first; the first wait is a random share of the interval.
        """
        loop = asyncio.get_running_loop()
        wait = self.heartbeat_s * timers.random_phase()
        while True:
            await timers.sleep(wait)
            quiet = loop.time() - self.last_sent
            if quiet < self.heartbeat_s - timers.GRAIN_S:  # heard from lately: the next look is one interval on
                wait = self.heartbeat_s - quiet
                continue
            beat = agent_pb2.Heartbeat(uptime_s=int(time.monotonic() - self.started))
            await link.send(agent_pb2.AgentMessage(seq=0, sent_at_ms=int(time.time() * 1000), heartbeat=beat))
            self.last_sent = loop.time()
            wait = self.heartbeat_s
