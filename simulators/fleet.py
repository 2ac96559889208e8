"""A simulated fleet: N real agents (agent.AgentDaemon) sharing one event loop in one process.

Each simulated device has its own name, data dir (identity, SQLite state, outbox, cache)
and enrollment; hardware comes from a device profile (simulators/profiles.py) and the link
is the real gRPC or MQTT one, optionally through a `netfault` proxy (`--broker` pointing
at it). Only the hardware is simulated, and one thing more: the onnxruntime provider probe
(a subprocess per agent) is skipped, since a profile declares its providers.

    python -m simulators fleet --count 100 --profile iot-edge --hub 127.0.0.1:7070 --transport mqtt

(the command line is simulators/fleet_cli.py)

A simulated sensor (`--telemetry-rate`) adds numbered `sim.load` points to each agent's
outbox, so a test can count at the hub that every point arrived exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import resource
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from agent import AgentConfig, AgentDaemon, AgentState, DaemonParts, EnrollError, enroll, inventory
from protos.edgeport.v1 import agent_pb2
from simulators.process import raise_fd_limit
from simulators.profiles import Profile, UnknownProfile, get_profile

LOAD_METRIC = "sim.load"
# Each agent holds its SQLite database, WAL and shared-memory index, its data-dir lock and its link's socket.
FILES_PER_AGENT = 5
FILES_SPARE = 200  # the process's own: the runtime's log, pulls, the loop, imports


class FleetError(Exception):
    """The fleet could not be set up (message says what and where)."""


@dataclass
class FleetOptions:
    """What to simulate."""

    hub: str  # HOST:PORT of the hub API
    count: int
    root: Path  # one data dir per device under here
    profile: str = "iot-edge"
    transport: str | None = None  # default: the profile's
    broker: str | None = None  # MQTT broker URL overriding the enrolled one (e.g. a netfault proxy)
    insecure: bool = False
    name_prefix: str = "sim"
    labels: dict[str, str] = field(default_factory=dict)
    heartbeat_s: int | None = None
    telemetry_rate: float = 0.0  # sim.load points per second per device (0: none)
    telemetry_batch: int = 10  # points per TelemetryBatch message
    telemetry_paused: bool = False  # sensors start paused (SIGUSR1 toggles them in the CLI)
    shared_runtime: bool = False  # one real runtime per service generation for the whole process
    enroll_concurrency: int = 16
    # Threads for the agents' blocking work (pulls, layouts); 0: Python's default (CPUs + 4). More did not
    # measurably shorten a 1,000-agent deploy on 2 cores; the knob is for measuring on other machines.
    threads: int = int(os.environ.get("EDGEPORT_FLEET_THREADS", "0"))
    quiet: bool = False  # no per-agent progress lines (thousands of agents, one stdout)
    # An admin API token for the enrollment calls (default: $EDGEPORT_TOKEN).
    token: str = field(default_factory=lambda: os.environ.get("EDGEPORT_TOKEN", ""))


def _post_json(url: str, body: dict, token: str = "", timeout: float = 30.0) -> dict:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        raise FleetError(f"hub {url}: HTTP {exc.code}: {message}") from None
    except OSError as exc:
        raise FleetError(f"cannot reach the hub at {url}: {exc}") from None


@functools.lru_cache(maxsize=8)
def _inventory_json(profile_json: str) -> bytes:
    return inventory(json.loads(profile_json), probe_providers=False).SerializeToString()


def _simulated_inventory(profile: dict | None) -> agent_pb2.HardwareInventory:
    """agent.inventory without the per-agent provider subprocess (the profile declares providers)."""
    if not profile:
        return inventory(None)
    return agent_pb2.HardwareInventory.FromString(_inventory_json(json.dumps(profile, sort_keys=True)))


@functools.lru_cache(maxsize=4)
def _load_template(count: int) -> agent_pb2.AgentMessage:
    """A TelemetryBatch of `count` sim.load points, to be copied and numbered (never modified itself)."""
    point = agent_pb2.TelemetryPoint(metric=LOAD_METRIC, labels={"simulated": "true"})
    return agent_pb2.AgentMessage(telemetry=agent_pb2.TelemetryBatch(points=[point] * count))


class SimulatedDevice:
    """One agent of the fleet, plus its simulated sensor."""

    def __init__(self, name: str, config: AgentConfig, parts: DaemonParts) -> None:
        self.name = name
        self.daemon = AgentDaemon(config, parts=parts)
        self.task: asyncio.Task[None] | None = None
        self.load_sent = 0  # sim.load points handed to the outbox
        self.error: BaseException | None = None

    def add_load(self, count: int) -> None:
        """Queue `count` numbered sim.load points (one TelemetryBatch) into the agent's outbox."""
        if self.daemon.outbox is None:
            return
        now = int(time.time() * 1000)
        message = agent_pb2.AgentMessage()
        message.CopyFrom(_load_template(count))  # ~10x cheaper than building each point with its labels
        for i, point in enumerate(message.telemetry.points, self.load_sent + 1):
            point.at_ms, point.value = now, float(i)
        self.load_sent += count
        # The daemon's own telemetry loop uses this same path (outbox, then the link when it is up).
        self.daemon.queue(message)

    @property
    def connected(self) -> bool:
        """Whether the agent said it connected at least once (its identity exists)."""
        return self.daemon.identity is not None


class SimulatedFleet:
    """Enroll, run and stop N simulated devices on the running event loop."""

    def __init__(self, options: FleetOptions) -> None:
        self.options = options
        try:
            self.profile: Profile = get_profile(options.profile)
        except UnknownProfile as exc:
            raise FleetError(str(exc)) from None
        if options.count < 1:
            raise FleetError(f"--count must be at least 1, got {options.count}")
        need, limit = options.count * FILES_PER_AGENT + FILES_SPARE, resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if need > limit:
            raise FleetError(
                f"--count {options.count}: the agents need ~{need:,} open files ({FILES_PER_AGENT} each) and this "
                f"process may open {limit:,} (ulimit -Hn); run several fleet processes with fewer agents each"
            )
        self.transport = options.transport or self.profile.transport
        if self.transport not in ("grpc", "mqtt"):
            raise FleetError(f"--transport must be grpc or mqtt, got {self.transport!r}")
        self.root = Path(options.root)
        self.devices: list[SimulatedDevice] = []
        self._load_task: asyncio.Task[None] | None = None
        self.parts = DaemonParts(inventory=_simulated_inventory)
        if options.shared_runtime:
            from simulators.shared_runtime import SharedRuntimeSupervisor, shared_rss, shared_scrape

            self.parts.supervisor = SharedRuntimeSupervisor  # see simulators/shared_runtime.py
            self.parts.scrape, self.parts.rss = shared_scrape, shared_rss  # one runtime: one scrape for all
            # Cached for the process (one real read per runtime every few seconds): called on the loop.
            self.parts.figures_in_memory = True
        if options.quiet:
            self.parts.say = lambda line: None  # thousands of agents, one stdout
        self.load_paused = options.telemetry_paused

    def names(self) -> list[str]:
        """Device names, in order."""
        return [f"{self.options.name_prefix}-{i:05d}" for i in range(self.options.count)]

    async def _token(self, name: str, data_dir: Path, gate: asyncio.Semaphore) -> str | None:
        if (data_dir / "identity").exists():
            return None  # enrolled on an earlier run: the agent reuses its identity
        labels = {"profile": self.profile.name, "fleet": self.options.name_prefix, **self.options.labels}
        async with gate:
            reply = await asyncio.to_thread(
                _post_json,
                f"http://{self.options.hub}/api/v1/devices",
                {"name": name, "labels": labels},
                self.options.token,
            )
        return str(reply["token"])

    async def _tokens(self, gate: asyncio.Semaphore) -> tuple[list[str], list[str | None]]:
        """Device names and, for each device without an identity yet, a fresh enrollment token."""
        raise_fd_limit()
        self.root.mkdir(parents=True, exist_ok=True)
        names = self.names()
        return names, list(await asyncio.gather(*(self._token(n, self.root / n, gate) for n in names)))

    async def enroll(self, progress: bool = False) -> int:
        """Enroll every device that has no identity yet, without starting its agent; return how many.

        The same exchange an agent does on its first start (agent.link.enroll), one per device, at most
        `enroll_concurrency` at once.
        """
        gate = asyncio.Semaphore(self.options.enroll_concurrency)
        names, tokens = await self._tokens(gate)
        hardware = _simulated_inventory(json.loads(self.profile.to_json()))

        async def one(name: str, token: str) -> None:
            async with gate:
                try:
                    identity = await asyncio.to_thread(enroll, self.options.hub, token, self.root / name, hardware)
                except EnrollError as exc:
                    raise FleetError(f"device {name}: enrollment failed: {exc}") from None
            state = AgentState(self.root / name)
            try:
                state.save_identity(identity)
            finally:
                state.close()

        new = [(n, t) for n, t in zip(names, tokens, strict=True) if t is not None]
        await asyncio.gather(*(one(n, t) for n, t in new))
        if progress and new:
            print(f"fleet: {len(new)} device(s) enrolled", flush=True)
        return len(new)

    async def start(self, progress: bool = False) -> None:
        """Create a token per new device, then start every agent (each enrolls itself on first start)."""
        names, tokens = await self._tokens(asyncio.Semaphore(self.options.enroll_concurrency))
        profile_path = self.root / f"{self.profile.name}.profile.json"
        profile_path.write_text(self.profile.to_json())
        if progress:
            print(f"fleet: {len(names)} device(s) registered at the hub", flush=True)
        for name, token in zip(names, tokens, strict=True):
            config = AgentConfig(
                hub=self.options.hub,
                data_dir=self.root / name,
                token=token,
                insecure=self.options.insecure,
                transport=self.transport,
                broker=self.options.broker,
                profile=str(profile_path),
                labels=dict(self.options.labels),
                heartbeat_s=self.options.heartbeat_s,
            )
            device = SimulatedDevice(name, config, self.parts)
            device.task = asyncio.create_task(self._run(device), name=f"agent {name}")
            self.devices.append(device)
        if self.options.telemetry_rate > 0:
            self._load_task = asyncio.create_task(self._load())

    async def _run(self, device: SimulatedDevice) -> None:
        try:
            await device.daemon.run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # one device failing must not stop the fleet; report it
            device.error = exc
            print(f"fleet: device {device.name} stopped: {exc}", file=sys.stderr, flush=True)

    async def _load(self) -> None:
        """Each device's sensor: `telemetry_rate` points/s, in batches of `telemetry_batch`."""
        batch = max(1, self.options.telemetry_batch)
        interval = batch / self.options.telemetry_rate
        while True:
            await asyncio.sleep(interval)
            if self.load_paused:
                continue
            for device in self.devices:
                device.add_load(batch)

    def stop_load(self) -> None:
        """Stop the simulated sensors (what was queued still gets delivered)."""
        if self._load_task is not None:
            self._load_task.cancel()
            self._load_task = None

    async def stop(self) -> None:
        """Stop every agent (clean link close: MQTT devices say 'offline'), wait for them."""
        self.stop_load()
        for device in self.devices:
            device.daemon.request_stop()
        tasks = [d.task for d in self.devices if d.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=30)
            for t in pending:
                t.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*pending, return_exceptions=True)
        self.parts.registry_client.close()  # the pulls' pooled connections, while their loop still runs

    def failed(self) -> list[SimulatedDevice]:
        """Devices whose agent stopped with an error."""
        return [d for d in self.devices if d.error is not None]
