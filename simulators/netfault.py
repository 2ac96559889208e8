"""A simulated network fault: an asyncio TCP proxy (127.0.0.1 only) in front of the hub or the broker.

Put it between agents and the hub/broker, then change the link while traffic flows:

    proxy = FaultProxy(("127.0.0.1", broker_port))
    port = await proxy.start()            # agents connect to 127.0.0.1:port
    proxy.set_latency(200, jitter_ms=50)  # every chunk waits, order is kept (it is TCP)
    proxy.drop()                          # blackhole: sockets stay open, nothing flows
    proxy.cut()                           # every connection closed, new ones refused
    proxy.restore()                       # back to normal (held bytes flow again after a drop)

`drop` holds bytes instead of discarding them: a real blackhole loses packets that TCP
retransmits later, so a stream that survives the outage arrives intact; only keep-alives
notice. `cut` closes both sides and stops listening (connection refused), as when a
broker or hub host goes away.

Control it with the Python API (in the loop) or text commands (`cut`, `drop`, `restore`,
`latency MS [JITTER]`, `status`); a schedule (`at_s:command` pairs, or a random one from a
profile's `LinkFlakiness`) runs the same commands on a timer. From outside its loop (a control
socket, a synchronous test) see simulators/netfault_control.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from simulators.profiles import LinkFlakiness

log = logging.getLogger("simulators.netfault")

LOOPBACK = "127.0.0.1"
CHUNK = 64 * 1024


class FaultCommandError(ValueError):
    """A control command or schedule entry that cannot be understood (message says which)."""


@dataclass
class LinkState:
    """What the simulated link does right now."""

    mode: str = "pass"  # pass | drop | cut
    latency_ms: int = 0
    jitter_ms: int = 0


@dataclass
class ProxyStats:
    """Counters a test can assert on."""

    accepted: int = 0
    refused: int = 0  # connections turned away during a cut
    closed_by_cut: int = 0
    bytes_up: int = 0  # client -> target
    bytes_down: int = 0  # target -> client
    events: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, command)


class _Connection:
    """One proxied client connection: two pumps, closed together."""

    def __init__(self, proxy: FaultProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client_reader = reader
        self.client_writer = writer
        self.tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.proxy.target)
        except OSError as exc:  # target down: the client sees its connection close, as with a dead host
            log.info("netfault: target %s:%d unreachable: %s", *self.proxy.target, exc)
            self.client_writer.close()
            return
        self.tasks = [
            asyncio.create_task(self._pump(self.client_reader, up_writer, "up")),
            asyncio.create_task(self._pump(up_reader, self.client_writer, "down")),
        ]
        try:
            await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in self.tasks:
                task.cancel()
            for w in (up_writer, self.client_writer):
                _abort(w)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str) -> None:
        # Reader fills a queue stamped with delivery times; the writer sleeps until each is due.
        # Keeping delivery times monotonic keeps the byte order TCP promises even with jitter.
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=256)
        sender = asyncio.create_task(self._deliver(queue, writer))
        last_due = 0.0
        try:
            while True:
                await self.proxy._flowing.wait()  # drop: stop reading; the peer's TCP buffers fill
                data = await reader.read(CHUNK)
                if not data:
                    break
                state = self.proxy.state
                delay = (state.latency_ms + random.uniform(0, state.jitter_ms)) / 1000.0
                last_due = max(last_due, time.monotonic() + delay)
                await queue.put((last_due, data))
                if direction == "up":
                    self.proxy.stats.bytes_up += len(data)
                else:
                    self.proxy.stats.bytes_down += len(data)
            await queue.put((0.0, b""))
            await sender
        finally:
            sender.cancel()

    async def _deliver(self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
        while True:
            due, data = await queue.get()
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self.proxy._flowing.wait()  # bytes already read are held, not lost, during a drop
            writer.write(data)
            await writer.drain()

    def cut(self) -> None:
        for task in self.tasks:
            task.cancel()
        _abort(self.client_writer)


def _abort(writer: asyncio.StreamWriter) -> None:
    # abort() sends RST at once (no lingering FIN handshake): what a dead link looks like to a peer.
    with contextlib.suppress(Exception):
        writer.transport.abort()


class FaultProxy:
    """A TCP proxy on 127.0.0.1 whose link can be slowed, blackholed, cut and restored."""

    def __init__(self, target: tuple[str, int], *, listen_port: int = 0) -> None:
        if target[0] not in (LOOPBACK, "localhost"):
            raise FaultCommandError(f"netfault target must be on {LOOPBACK}, not {target[0]}")
        self.target = (LOOPBACK, int(target[1]))
        self.port = listen_port
        self.state = LinkState()
        self.stats = ProxyStats()
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._schedule_task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Listen (on the given port, or a free one) and return the port agents should use."""
        await self._listen()
        return self.port

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.state.mode == "cut":  # a connection that raced the cut
            self.stats.refused += 1
            _abort(writer)
            return
        self.stats.accepted += 1
        conn = _Connection(self, reader, writer)
        self._connections.add(conn)
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)

    @property
    def connections(self) -> int:
        """Client connections open through the proxy now."""
        return len(self._connections)

    # ---- commands ----

    def set_latency(self, latency_ms: int, jitter_ms: int = 0) -> None:
        """Delay every chunk by latency_ms plus up to jitter_ms (order kept)."""
        if latency_ms < 0 or jitter_ms < 0:
            raise FaultCommandError("latency and jitter must be >= 0 milliseconds")
        self.state.latency_ms, self.state.jitter_ms = latency_ms, jitter_ms
        self._event(f"latency {latency_ms} {jitter_ms}")

    def drop(self) -> None:
        """Blackhole: nothing flows either way, sockets stay open (only keep-alives will notice)."""
        if self.state.mode == "cut":
            raise FaultCommandError("the link is cut; restore it before blackholing it")
        self.state.mode = "drop"
        self._flowing.clear()
        self._event("drop")

    def cut(self) -> None:
        """Close every connection (RST) and refuse new ones until `restore`."""
        self.state.mode = "cut"
        self._flowing.set()  # let pumps wake up and see their cancellation
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._connections):
            conn.cut()
            self.stats.closed_by_cut += 1
        self._event("cut")

    async def restore(self) -> None:
        """Back to a working link (latency settings stay); listens again after a cut."""
        if self.state.mode == "cut" and self._server is None:
            await self._listen()
        self.state.mode = "pass"
        self._flowing.set()
        self._event("restore")

    def _event(self, what: str) -> None:
        self.stats.events.append((time.monotonic(), what))
        log.info("netfault %d -> %s:%d: %s", self.port, *self.target, what)

    async def command(self, line: str) -> dict:
        """Run one text command (`cut`, `drop`, `restore`, `latency MS [JITTER]`, `status`); return the status."""
        parts = line.split()
        if not parts:
            raise FaultCommandError("empty command")
        verb, args = parts[0].lower(), parts[1:]
        if verb == "cut" and not args:
            self.cut()
        elif verb == "drop" and not args:
            self.drop()
        elif verb == "restore" and not args:
            await self.restore()
        elif verb == "latency" and 1 <= len(args) <= 2:
            try:
                numbers = [int(a) for a in args]
            except ValueError:
                raise FaultCommandError(f"latency takes whole milliseconds, got {' '.join(args)!r}") from None
            self.set_latency(*numbers)
        elif verb != "status" or args:
            raise FaultCommandError(
                f"unknown command {line.strip()!r}: use cut, drop, restore, latency MS [JITTER] or status"
            )
        return self.status()

    def status(self) -> dict:
        """The link state and counters as a JSON-able dict."""
        return {
            "port": self.port,
            "target": f"{self.target[0]}:{self.target[1]}",
            "mode": self.state.mode,
            "latency_ms": self.state.latency_ms,
            "jitter_ms": self.state.jitter_ms,
            "connections": self.connections,
            "accepted": self.stats.accepted,
            "refused": self.stats.refused,
            "closed_by_cut": self.stats.closed_by_cut,
            "bytes_up": self.stats.bytes_up,
            "bytes_down": self.stats.bytes_down,
        }

    # ---- schedules ----

    def run_schedule(self, schedule: Iterable[tuple[float, str]]) -> asyncio.Task[None]:
        """Run `(at_s, command)` pairs, at_s measured from now; returns the task (cancel to stop)."""
        steps = sorted(schedule)
        for _, line in steps:  # refuse a bad schedule before anything runs
            _check_command(line)

        async def play() -> None:
            start = time.monotonic()
            for at_s, line in steps:
                await asyncio.sleep(max(0.0, start + at_s - time.monotonic()))
                await self.command(line)

        self._schedule_task = asyncio.create_task(play())
        return self._schedule_task

    def run_flaky(self, link: LinkFlakiness, *, seed: int | None = None) -> asyncio.Task[None]:
        """Apply a profile's latency, then cut/drop the link at random (exponential gaps) until cancelled."""
        self.set_latency(link.latency_ms, link.jitter_ms)
        rng = random.Random(seed)

        async def play() -> None:
            if not link.flaky:
                return
            while True:
                await asyncio.sleep(rng.expovariate(1.0 / link.outage_every_s))
                self.cut() if link.outage_kind == "cut" else self.drop()
                await asyncio.sleep(link.outage_s)
                await self.restore()

        self._schedule_task = asyncio.create_task(play())
        return self._schedule_task

    async def stop(self) -> None:
        """Stop the schedule, close every connection and the listener."""
        if self._schedule_task is not None:
            self._schedule_task.cancel()
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._connections):
            conn.cut()
        await asyncio.sleep(0)


def _check_command(line: str) -> None:
    parts = line.split()
    ok = bool(parts) and (
        (parts[0] in ("cut", "drop", "restore", "status") and len(parts) == 1)
        or (parts[0] == "latency" and 2 <= len(parts) <= 3 and all(p.isdigit() for p in parts[1:]))
    )
    if not ok:
        raise FaultCommandError(f"bad schedule command {line!r}: use cut, drop, restore or latency MS [JITTER]")


def parse_schedule(text: str) -> list[tuple[float, str]]:
    """`"10:cut,40:restore,45:latency 200 50"` → [(10.0, "cut"), ...]; FaultCommandError names a bad entry."""
    steps: list[tuple[float, str]] = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        at, sep, line = item.partition(":")
        try:
            at_s = float(at)
        except ValueError:
            at_s = -1.0
        if not sep or at_s < 0:
            raise FaultCommandError(f"bad schedule entry {item!r}: expected SECONDS:COMMAND, e.g. 10:cut")
        _check_command(line.strip())
        steps.append((at_s, line.strip()))
    return steps
