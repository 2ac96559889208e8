"""The agent daemon: wires state, outbox, cache, supervisor and reconciler to one link to the hub.

Three loops run side by side: the reconciler (always, link or not), the session loop (open
a Link, send Hello, replay the outbox in order, apply DesiredStates, reconnect with backoff)
and the telemetry loop (points into the outbox, so they survive outages). Every milestone is
one line on stdout ("enrolled", "connected", each service phase change) so scripts and tests
can follow it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from agent import event_loop, timers
from agent.cache import DEFAULT_MAX_BYTES as CACHE_MAX_BYTES
from agent.cache import ArtifactCache
from agent.environments import EnvironmentCache
from agent.hardware import inventory, load_profile
from agent.link.base import Link, LinkClosed
from agent.link.enroll import AGENT_VERSION, EnrollError, enroll, identity_dir
from agent.outbox import DEFAULT_MAX_BYTES as OUTBOX_MAX_BYTES
from agent.outbox import Outbox
from agent.profiler import profile_service
from agent.reconciler import DEFAULT_PULL_RETRY_WINDOW_S, Reconciler
from agent.registry_client import RegistryClient
from agent.state import AgentState, Identity
from agent.supervisor import Supervisor, tail
from agent.telemetry import RuntimeStats, TelemetryCollector, rss_bytes, scrape
from protos.edgeport.v1 import agent_pb2

RECONNECT_MAX_S = 10.0  # short enough to be back soon after a hub restart; jitter spreads a fleet's retries
# After a session ends: at least this pause (a hub that ends sessions at once is not hammered), plus a random
# share of the hub's reconnect spread (Welcome.reconnect_spread_ms), and of at least this spread.
RECONNECT_PAUSE_S = 0.5
MIN_RECONNECT_SPREAD_S = 1.0
DEFAULT_HEARTBEAT_S = 10
DEFAULT_TELEMETRY_S = 60  # when the hub names none; hubs say 60 by default too
# A progress status (Pending, Pulling, Starting, Restarting) waits this long before it goes into the outbox; a
# newer status of the same service in that time replaces it. The hub keeps only the latest status per device
# and service, so a superseded one would only cost a message and a write on both sides. Settled phases
# (Healthy, Failed, Rolled back, Removed) go at once and take the waiting ones with them, in order.
DEFAULT_STATUS_LINGER_S = 1.0
# While progress keeps coming without a settled phase (a long pull, a device busy with a fleet-wide rollout)
# each timed flush doubles the next linger, up to this; a settled phase starts again at the configured one.
# At 10,000 agents on 2 cores a deploy took 2-3 s per agent: three status messages each with a fixed 1 s
# linger, two with this.
MAX_STATUS_LINGER_S = 4.0
_SETTLED_PHASES = frozenset({agent_pb2.HEALTHY, agent_pb2.FAILED, agent_pb2.ROLLED_BACK, agent_pb2.REMOVED})
INVENTORY_ENV = "_EDGEPORT_AGENT_INVENTORY"  # hands the probed inventory across the post-enrollment re-exec


def _phase() -> float:
    """The first wait of a periodic report, as a share of its interval: drawn from [0, 1).

    Agents that start or reconnect together (a site powering up, a fleet back after a hub restart) would
    otherwise send their heartbeats and telemetry rounds in step for as long as they run: 10,000 at once
    every interval instead of a steady stream.
    """
    return random.random()


def reconnect_pause(spread_s: float, share: float) -> float:
    """Seconds to wait after losing a session, `share` being drawn from [0, 1).

    A hub restart ends every session at once; without a spread its whole fleet would redo its TLS
    handshakes within the same second. The hub names the spread, sized to its fleet.
    """
    return RECONNECT_PAUSE_S + share * max(MIN_RECONNECT_SPREAD_S, spread_s)


class Reexec(Exception):
    """Enrolled just now: start the process afresh so enrollment-only libraries (cryptography) leave memory."""


class AgentError(Exception):
    """The agent cannot go on (message for the user; `exit_code` 2 for bad input, 1 for failures)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class AgentConfig:
    """What `agent run` was told."""

    hub: str
    data_dir: Path
    token: str | None = None
    insecure: bool = False
    transport: str = "grpc"
    broker: str | None = None
    profile: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    heartbeat_s: int | None = None
    telemetry_s: int | None = None
    runtime_host: str = "127.0.0.1"
    keep_runtimes: bool = False  # on a clean stop leave runtimes running (a restarted agent adopts them)
    # The CLI's agent owns its process: signal handlers, a small thread pool, and a re-exec after enrolling
    # (a fresh image keeps the idle RSS low). Off for agents embedded in another process (simulators/fleet.py).
    owns_process: bool = False
    cache_max_bytes: int = CACHE_MAX_BYTES
    outbox_max_bytes: int = OUTBOX_MAX_BYTES
    status_linger_s: float = DEFAULT_STATUS_LINGER_S  # 0: every status goes into the outbox at once
    # How long a pull the registry keeps refusing (a blob damaged on the hub) is retried before the generation fails.
    pull_retry_window_s: float = DEFAULT_PULL_RETRY_WINDOW_S


def say(line: str) -> None:
    """One progress line on stdout, flushed at once (tests and operators follow these)."""
    print(f"agent: {line}", flush=True)


@dataclass
class DaemonParts:
    """The seams a process embedding many agents (simulators/fleet.py) may swap; the CLI uses the defaults.

    `inventory` reads the hardware from a profile (or the machine), `supervisor` makes the one place that
    starts runtimes, `say` takes the progress lines (thousands of agents cannot share one stdout), `scrape`
    and `rss` read a runtime's /metrics and memory for telemetry (agents sharing one runtime share these;
    `figures_in_memory` says they answer without blocking), `sync_file` makes a pulled blob durable before
    it enters the cache (fsync), `registry_client` holds the pulls' keep-alive connections (one per process).
    """

    inventory: Callable[[dict | None], agent_pb2.HardwareInventory] = inventory
    supervisor: Callable[[Path], Supervisor] = Supervisor
    say: Callable[[str], None] = say
    scrape: Callable[[int], RuntimeStats | None] = scrape
    rss: Callable[[int], int] = rss_bytes
    sync_file: Callable[[int], None] = os.fsync
    registry_client: RegistryClient = field(default_factory=RegistryClient)  # pulls' connections, shared
    # Whether `scrape` and `rss` answer from memory (a fleet's shared figures, read for real once every few
    # seconds): then telemetry calls them on the event loop, not through the thread pool per agent and interval.
    figures_in_memory: bool = False


class AgentDaemon:
    """One running agent."""

    def __init__(
        self,
        config: AgentConfig,
        link_factory: Callable[[Identity], Link] | None = None,
        parts: DaemonParts | None = None,
    ) -> None:
        self.config = config
        self.parts = parts or DaemonParts()
        self.data_dir = Path(config.data_dir).resolve()  # runtimes run in other folders: paths must be absolute
        self.started = time.monotonic()
        self.link_factory = link_factory
        self.state: AgentState | None = None
        self.outbox: Outbox | None = None
        self.reconciler: Reconciler | None = None
        self.identity: Identity | None = None
        self.hardware = agent_pb2.HardwareInventory()
        self.telemetry = TelemetryCollector(scrape=self.parts.scrape, rss=self.parts.rss)
        self._outbox_changed = asyncio.Event()
        self._phases: dict[str, tuple[int, int]] = {}
        self._held: dict[str, agent_pb2.DeploymentStatus] = {}  # progress statuses waiting out the linger
        self._held_flush: asyncio.TimerHandle | None = None
        self._linger = config.status_linger_s  # the next progress linger (grows while progress lasts)
        self._desired_unacked = False  # a desired state came that no status or DesiredStateAck has acknowledged
        self._last_sent = 0.0  # loop time of the last message sent to the hub (heartbeats wait for quiet)
        self._ack_to = 0  # the highest hub Ack not yet applied to the outbox (applied once per burst)
        self._ack_pending = False
        self.heartbeat_s = config.heartbeat_s or DEFAULT_HEARTBEAT_S
        self.telemetry_s = config.telemetry_s or DEFAULT_TELEMETRY_S
        self._telemetry_due = asyncio.Event()
        self._telemetry_timer: asyncio.TimerHandle | None = None
        self._stop = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._lock_fd: int | None = None
        self._closed = False  # the state database was closed (late callbacks must not touch it)

    # ---- start-up ----

    async def _setup(self) -> None:
        try:
            profile = load_profile(self.config.profile)
        except Exception as exc:  # ProfileError: bad input
            raise AgentError(str(exc), 2) from None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        self.state = AgentState(self.data_dir)
        handed_over = os.environ.pop(INVENTORY_ENV, "")
        if handed_over:  # probed by this same agent just before its re-exec: don't start onnxruntime twice
            self.hardware = agent_pb2.HardwareInventory.FromString(bytes.fromhex(handed_over))
        else:
            self.hardware = await asyncio.to_thread(self.parts.inventory, profile)
        self.identity = self.state.identity()
        if self.identity is None:
            if not self.config.token:
                raise AgentError(f"{self.data_dir} holds no device identity yet: give --token to enroll", 2)
            try:
                self.identity = await asyncio.to_thread(
                    enroll, self.config.hub, self.config.token, self.data_dir, self.hardware
                )
            except EnrollError as exc:
                raise AgentError(str(exc), 2 if exc.bad_input or "refused" in str(exc) else 1) from None
            self.state.save_identity(self.identity)
            ident = self.identity
            self.parts.say(f"enrolled as device {ident.device_id} (hub {self.config.hub}, gRPC {ident.grpc_address})")
            if self.config.owns_process:
                self.state.close()
                if self._lock_fd is not None:
                    os.close(self._lock_fd)
                os.environ[INVENTORY_ENV] = self.hardware.SerializeToString().hex()
                raise Reexec()
        else:
            self.parts.say(f"identity: device {self.identity.device_id} (data dir {self.data_dir})")
        self.outbox = Outbox(self.state, self.config.outbox_max_bytes)
        hub = self.identity.hub
        self.reconciler = Reconciler(
            self.state,
            ArtifactCache(
                self.data_dir / "cache",
                self.config.cache_max_bytes,
                sync=self.parts.sync_file,
                client=self.parts.registry_client,
            ),
            EnvironmentCache(self.data_dir / "envs"),
            self.parts.supervisor(self.data_dir / "logs"),
            self._report,
            services_dir=self.data_dir / "services",
            default_registry=hub if "://" in hub else f"http://{hub}",
            host=self.config.runtime_host,
            pull_retry_window_s=self.config.pull_retry_window_s,
        )
        self.reconciler.resume()
        for name, proc in self.reconciler.procs.items():
            self.parts.say(
                f"service {name}: adopted running runtime pid {proc.pid} (generation {proc.spec.generation})"
            )

    def _lock_data_dir(self) -> None:
        """One agent per data dir: two would both supervise (and adopt) the same runtimes."""
        fd = os.open(self.data_dir / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AgentError(f"another agent already runs with data dir {self.data_dir}", 2) from None
        self._lock_fd = fd  # close-on-exec: the re-exec'd agent takes the lock again

    def _make_link(self) -> Link:
        assert self.identity is not None
        if self.link_factory is not None:
            return self.link_factory(self.identity)
        if self.config.transport == "mqtt":
            from agent.link.mqtt import MqttLink  # room 5's transport; imported only when chosen

            return MqttLink(self.identity, broker=self.config.broker)
        from agent.link.grpc import GrpcLink

        return GrpcLink(self.identity, identity_dir(self.data_dir), insecure=self.config.insecure)

    # ---- reports ----

    def _report(self, status: agent_pb2.DeploymentStatus) -> None:
        """A service status from the reconciler: into the outbox (progress ones after a linger, see
        DEFAULT_STATUS_LINGER_S), and one line when the phase changed."""
        assert self.outbox is not None
        self._held.pop(status.service, None)  # re-inserted last: held statuses keep the order they were made in
        self._held[status.service] = status
        if status.phase in _SETTLED_PHASES or self.config.status_linger_s <= 0:
            self.flush_statuses()
            self._linger = self.config.status_linger_s
        elif self._held_flush is None:
            try:
                self._held_flush = asyncio.get_running_loop().call_later(self._linger, self._flush_progress)
            except RuntimeError:  # no loop (a direct call): nothing could flush it later
                self.flush_statuses()
        key = (status.generation, status.phase)
        if self._phases.get(status.service) != key or status.phase == agent_pb2.PULLING:
            self._phases[status.service] = key
            phase = agent_pb2.Phase.Name(status.phase)
            uri = f" {status.scoring_uri}" if status.scoring_uri and status.phase == agent_pb2.HEALTHY else ""
            self.parts.say(
                f"service {status.service} generation {status.generation}: {phase}{uri} {status.message}".rstrip()
            )

    def _flush_progress(self) -> None:
        """The linger ran out: send what is held; while progress lasts, wait longer before the next."""
        self._held_flush = None
        progress = bool(self._held)
        self.flush_statuses()
        base = self.config.status_linger_s
        self._linger = min(self._linger * 2, max(MAX_STATUS_LINGER_S, base)) if progress else base

    def _acknowledge_desired(self) -> None:
        """A desired state came in: its ack rides on the statuses it causes, or goes alone after the linger.

        Every status names the revision the agent has taken in (`desired_revision`), and the hub takes that
        as the ack: one message fewer per deploy on each side. A desired state that changes nothing here
        makes no status, so a DesiredStateAck follows when the linger runs out. Should the agent stop first,
        its next Hello names the revision.
        """
        self._desired_unacked = True
        if self.config.status_linger_s <= 0:
            self.flush_statuses()
        elif self._held_flush is None:
            self._held_flush = asyncio.get_running_loop().call_later(self._linger, self._flush_progress)

    def flush_statuses(self) -> None:
        """Put the held statuses (or, with none, the ack a desired state is owed) into the outbox, in one
        transaction."""
        if self._held_flush is not None:
            self._held_flush.cancel()
            self._held_flush = None
        if self.outbox is None or self.state is None or not (self._held or self._desired_unacked):
            return
        revision = self.state.desired().revision
        held, self._held = list(self._held.values()), {}
        messages = []
        for status in held:
            status.desired_revision = revision
            messages.append(agent_pb2.AgentMessage(status=status))
        if not messages:
            messages.append(agent_pb2.AgentMessage(desired_ack=agent_pb2.DesiredStateAck(revision=revision)))
        self._desired_unacked = False
        self.outbox.append_many(messages)
        self._outbox_changed.set()

    def _ack(self, seq: int) -> None:
        """A hub Ack: applied to the outbox once per burst of Acks (one delete instead of one per message)."""
        self._ack_to = max(self._ack_to, seq)
        if not self._ack_pending:
            self._ack_pending = True
            asyncio.get_running_loop().call_soon(self._apply_acks)

    def _apply_acks(self) -> None:
        self._ack_pending = False
        if self.outbox is not None and self.state is not None and not self._closed:
            self.outbox.ack(self._ack_to)

    def queue(self, message: agent_pb2.AgentMessage) -> None:
        """Hand one message to the outbox; it goes to the hub, in order, whenever the link is up."""
        assert self.outbox is not None
        self.outbox.append(message)
        self._outbox_changed.set()

    def _hello(self) -> agent_pb2.Hello:
        assert self.identity and self.state and self.outbox and self.reconciler
        return agent_pb2.Hello(
            device_id=self.identity.device_id,
            agent_version=AGENT_VERSION,
            hardware=self.hardware,
            services=self.reconciler.reports(),
            desired_revision=self.state.desired().revision,
            next_seq=self.outbox.first_pending_seq(),
        )

    # ---- loops ----

    async def _session_loop(self) -> None:
        assert self.outbox is not None and self.identity is not None
        delay = 1.0
        down_since: float | None = None
        spread_s = 0.0  # the reconnect spread the hub named in its last Welcome
        while True:
            link = self._make_link()
            try:
                welcome = await link.open(self._hello())
            except LinkClosed as exc:
                if getattr(link, "refused", False):
                    raise AgentError(f"the hub refused this device: {exc}", 1) from None
                if down_since is None:
                    down_since = time.monotonic()
                    self.parts.say(f"hub unreachable ({exc}); retrying")
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(RECONNECT_MAX_S, delay * 2)
                continue
            delay, down_since = 1.0, None
            spread_s = welcome.reconnect_spread_ms / 1000
            self.outbox.ack(welcome.acked_seq)
            if not self.config.heartbeat_s and welcome.heartbeat_interval_s > 0:
                self.heartbeat_s = welcome.heartbeat_interval_s
            if not self.config.telemetry_s and welcome.telemetry_interval_s > 0:
                self._set_telemetry_interval(welcome.telemetry_interval_s)
            self.parts.say(
                f"connected to hub as device {welcome.device_id or self.identity.device_id} ({self.config.transport})"
            )
            parts = [self._sender(link, welcome.acked_seq), self._receiver(link), self._heartbeats(link)]
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
            self.parts.say(f"disconnected from hub ({reason}); reconnecting in {pause:.1f} s")
            down_since = time.monotonic()
            await asyncio.sleep(pause)

    async def _sender(self, link: Link, acked: int) -> None:
        """Replay the outbox oldest first, then send new entries as they come (each exactly in seq order)."""
        assert self.outbox is not None
        sent = acked
        while True:
            self._outbox_changed.clear()
            batch = self.outbox.pending(after=sent)
            for message in batch:
                await link.send(message)
                sent = message.seq
            if batch:
                self._last_sent = asyncio.get_running_loop().time()  # no heartbeat needed for a while
            else:  # an append sets the event (also one made between clear() and here): no timeout needed
                await self._outbox_changed.wait()

    async def _receiver(self, link: Link) -> None:
        assert self.outbox is not None and self.reconciler is not None and self.state is not None
        async for message in link.incoming():
            kind = message.WhichOneof("body")
            if kind == "desired":
                changed = self.reconciler.desired_changed(message.desired)
                if changed:
                    names = ", ".join(f"{m.name}@{m.generation}" for m in message.desired.services) or "nothing"
                    self.parts.say(f"desired state revision {message.desired.revision}: {names}")
                self._acknowledge_desired()
            elif kind == "ack":
                self._ack(message.ack.seq)
            elif kind == "log_request":
                self.queue(agent_pb2.AgentMessage(logs=self._logs(message.log_request)))
            elif kind == "profile_request":
                task = asyncio.create_task(self._profile(message.profile_request))
                self._background.add(task)  # keep a reference until it ends
                task.add_done_callback(self._background.discard)

    def _logs(self, request: agent_pb2.LogRequest) -> agent_pb2.LogChunk:
        assert self.state is not None and self.reconciler is not None
        rec = self.state.service(request.service)
        lines: list[str] = []
        if rec is not None:
            generation = rec.generation or rec.failed_generation
            lines = tail(self.reconciler.supervisor.log_path(rec.name, generation), request.lines or 200)
        return agent_pb2.LogChunk(request_id=request.request_id, service=request.service, lines=lines)

    async def _profile(self, request: agent_pb2.ProfileRequest) -> None:
        assert self.state is not None
        rec = self.state.service(request.service)
        result = await asyncio.to_thread(profile_service, rec, request, self.config.runtime_host)
        self.queue(agent_pb2.AgentMessage(profile=result))

    async def _heartbeats(self, link: Link) -> None:
        """A heartbeat when nothing else went to the hub for an interval, as MQTT's keep-alive sends PINGREQ: any
        message tells the hub the agent is there (it records when it last heard from each device).

        Heartbeats go straight to the link (seq 0): an old heartbeat is worth nothing after an outage. The
        Hello stands for the first; the first wait is a random share of the interval (see `_phase`).
        """
        loop = asyncio.get_running_loop()
        wait = self.heartbeat_s * _phase()
        while True:
            await timers.sleep(wait)
            quiet = loop.time() - self._last_sent
            if quiet < self.heartbeat_s - timers.GRAIN_S:  # heard from lately: the next look is one interval on
                wait = self.heartbeat_s - quiet
                continue
            beat = agent_pb2.Heartbeat(uptime_s=int(time.monotonic() - self.started))
            await link.send(agent_pb2.AgentMessage(seq=0, sent_at_ms=int(time.time() * 1000), heartbeat=beat))
            self._last_sent = loop.time()
            wait = self.heartbeat_s

    def _set_telemetry_interval(self, seconds: int) -> None:
        """The hub's interval: the next round comes that long from now, not after the interval in force before."""
        if seconds == self.telemetry_s:
            return
        self.telemetry_s = seconds
        if self._telemetry_timer is not None:
            self._telemetry_timer.cancel()
            self._telemetry_timer = timers.call_later(asyncio.get_running_loop(), seconds, self._telemetry_due.set)

    async def _telemetry_loop(self) -> None:
        assert self.outbox is not None and self.reconciler is not None
        loop = asyncio.get_running_loop()
        try:
            first = True
            while True:
                self._telemetry_due.clear()
                delay = self.telemetry_s * (_phase() if first else 1.0)
                first = False
                self._telemetry_timer = timers.call_later(loop, delay, self._telemetry_due.set)
                await self._telemetry_due.wait()
                await self._send_telemetry()
        finally:
            if self._telemetry_timer is not None:
                self._telemetry_timer.cancel()
                self._telemetry_timer = None

    async def _send_telemetry(self) -> None:
        """One round: system and runtime points into the outbox."""
        assert self.outbox is not None and self.reconciler is not None
        points = self.telemetry.system_points()
        for name, proc in list(self.reconciler.procs.items()):
            if proc.alive():
                if self.parts.figures_in_memory:
                    points += self.telemetry.runtime_points(name, proc.spec.port, proc.pid)
                else:  # a scrape is an HTTP request: off the loop
                    points += await asyncio.to_thread(self.telemetry.runtime_points, name, proc.spec.port, proc.pid)
        for p in points:
            p.labels.update(self.config.labels)
        batch = agent_pb2.TelemetryBatch(points=points, dropped=self.outbox.take_dropped())
        self.queue(agent_pb2.AgentMessage(telemetry=batch))

    # ---- run / stop ----

    def request_stop(self) -> None:
        """Ask the daemon to stop (signal handlers call this)."""
        self._stop.set()

    async def run(self) -> None:
        """Run until stopped (SIGTERM/SIGINT) or a fatal error (AgentError)."""
        loop = asyncio.get_running_loop()
        if self.config.owns_process:
            # A bounded pool: each busy thread costs memory (a malloc arena); threads start only when needed,
            # and health probes run on the loop, so pulls that fill the pool never delay a rollout's health wait.
            loop.set_default_executor(ThreadPoolExecutor(max_workers=6, thread_name_prefix="agent"))
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.request_stop)
        await self._setup()
        assert self.reconciler is not None and self.state is not None
        tasks = [
            asyncio.create_task(self.reconciler.run(), name="reconciler"),
            asyncio.create_task(self._session_loop(), name="session"),
            asyncio.create_task(self._telemetry_loop(), name="telemetry"),
        ]
        stopper = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stopper and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            for t in [*tasks, stopper]:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await self.reconciler.stop_all()
            if not self.config.keep_runtimes:
                for name in await asyncio.to_thread(self.reconciler.stop_runtimes):
                    self.parts.say(f"service {name}: runtime stopped (agent shutting down)")
            self.flush_statuses()  # what the reconciler said last reaches the hub after a restart
            if self.outbox is not None:
                self.outbox.flush()  # acked rows, so a restart does not resend them
            self._closed = True
            self.state.close()
            if self.config.owns_process:  # a fleet shares the client across agents and closes it itself
                self.parts.registry_client.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            self.parts.say("stopped")


def main_async(config: AgentConfig) -> int:
    """Run an agent to the end; the exit code (0 clean stop, 1 failure, 2 bad input)."""
    daemon = AgentDaemon(config)
    try:
        event_loop.run(daemon.run())
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 0
    except Reexec:
        if daemon._stop.is_set():  # asked to stop while enrolling: the signal was consumed here, so stop now
            say("stopped")
            return 0
        sys.stdout.flush()
        sys.stderr.flush()
        # Same PID, same arguments (the token is ignored now that the identity is stored).
        os.execv(sys.executable, sys.orig_argv)
    return 0
