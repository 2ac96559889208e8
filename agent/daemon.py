"""The agent daemon: wires state, outbox, cache, supervisor and reconciler to one session with the hub.

Three loops run side by side: the reconciler (always, link or not), the session loop (agent/session.py)
and the telemetry rounds (agent/telemetry_loop.py). Statuses and acks reach the outbox through
agent/reports.py; the hub's requests for logs and profiles are answered by agent/hub_requests.py. Every
milestone is one line on stdout ("enrolled", "connected", each service phase change) so scripts and
tests can follow it. `main_async` runs one agent to its exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agent import event_loop
from agent.cache import ArtifactCache
from agent.config import AgentConfig, DaemonParts, say
from agent.datadir import DataDirLock
from agent.environments import EnvironmentCache
from agent.errors import AgentError, Reexec
from agent.hardware import load_profile
from agent.hub_requests import HubRequests
from agent.link.base import Link
from agent.link.enroll import AGENT_VERSION, EnrollError, enroll, identity_dir
from agent.outbox import Outbox
from agent.reconciler import Reconciler
from agent.reports import DEFAULT_STATUS_LINGER_S, MAX_STATUS_LINGER_S, StatusReports
from agent.session import (
    DEFAULT_HEARTBEAT_S,
    MIN_RECONNECT_SPREAD_S,
    RECONNECT_MAX_S,
    RECONNECT_PAUSE_S,
    HubSession,
    reconnect_pause,
)
from agent.state import AgentState, Identity
from agent.supervisor import RuntimeUser, RuntimeUserError, Supervisor, resolve_runtime_user
from agent.telemetry import TelemetryCollector
from agent.telemetry_loop import DEFAULT_TELEMETRY_S, TelemetryRounds
from agent.trust import DesiredStateRefused, DesiredStateTrust, SigningKey
from protos.edgeport.v1 import agent_pb2

# What other packages (simulators, benchmarks) import from here, from before these parts had modules of their own.
__all__ = [
    "DEFAULT_HEARTBEAT_S",
    "DEFAULT_STATUS_LINGER_S",
    "DEFAULT_TELEMETRY_S",
    "INVENTORY_ENV",
    "MAX_STATUS_LINGER_S",
    "MIN_RECONNECT_SPREAD_S",
    "RECONNECT_MAX_S",
    "RECONNECT_PAUSE_S",
    "AgentConfig",
    "AgentDaemon",
    "AgentError",
    "DaemonParts",
    "Reexec",
    "main_async",
    "reconnect_pause",
    "say",
]

INVENTORY_ENV = "_EDGEPORT_AGENT_INVENTORY"  # hands the probed inventory across the post-enrollment re-exec


class AgentDaemon:
    """One running agent: its parts are made by `run` (after the data dir is locked) and closed when it ends."""

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
        self.reports: StatusReports | None = None
        self.identity: Identity | None = None
        self.trust: DesiredStateTrust | None = None
        self._last_refusal: tuple[int, str] | None = None  # reported once, not for every repeat of it
        self.hardware = agent_pb2.HardwareInventory()
        self.telemetry = TelemetryCollector(scrape=self.parts.scrape, rss=self.parts.rss)
        self.outbox_changed = asyncio.Event()  # set on every append: wakes the session's sender
        self._stop = asyncio.Event()
        self._lock = DataDirLock(self.data_dir)

    # ---- start-up ----

    async def _setup(self) -> None:
        try:
            profile = load_profile(self.config.profile)
        except Exception as exc:  # ProfileError: bad input
            raise AgentError(str(exc), 2) from None
        try:  # before enrolling: a token is not spent on an agent that would refuse to run anything
            runtime_user = resolve_runtime_user(self.config.runtime_user)
        except RuntimeUserError as exc:
            raise AgentError(str(exc), 2) from None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        self.state = AgentState(self.data_dir)
        handed_over = os.environ.pop(INVENTORY_ENV, "")
        if handed_over:  # probed by this same agent just before its re-exec: don't start onnxruntime twice
            self.hardware = agent_pb2.HardwareInventory.FromString(bytes.fromhex(handed_over))
        else:
            self.hardware = await asyncio.to_thread(self.parts.inventory, profile)
        self.identity = self.state.identity()
        if self.identity is None:
            await self._enroll()
        else:
            self.parts.say(f"identity: device {self.identity.device_id} (data dir {self.data_dir})")
        assert self.identity is not None
        self.trust = DesiredStateTrust(self.state, self.identity.device_id, identity_dir(self.data_dir) / "ca.crt")
        if self.trust.signer is None and self.identity.signing_key:
            self.trust.adopt(SigningKey.from_json(self.identity.signing_key))
        self.outbox = Outbox(self.state, self.config.outbox_max_bytes)
        self.reports = StatusReports(self.outbox, self._desired_revision, self.outbox_changed, self.parts.say,
                                     self.config.status_linger_s)  # fmt: skip
        hub = self.identity.hub
        with contextlib.suppress(OSError):  # the hub's OCI endpoint over https: its certificate is from this CA
            self.parts.registry_client.trust_ca((identity_dir(self.data_dir) / "ca.crt").read_bytes())
        self.reconciler = Reconciler(
            self.state,
            ArtifactCache(
                self.data_dir / "cache",
                self.config.cache_max_bytes,
                sync=self.parts.sync_file,
                client=self.parts.registry_client,
                pull_token=self.identity.pull_token,
            ),
            EnvironmentCache(self.data_dir / "envs"),
            self._supervisor(runtime_user),
            self.reports.report,
            services_dir=self.data_dir / "services",
            default_registry=hub if "://" in hub else f"http://{hub}",
            host=self.config.runtime_host,
            pull_retry_window_s=self.config.pull_retry_window_s,
            identity_dir=identity_dir(self.data_dir),
        )
        self.reconciler.resume()
        for name, proc in self.reconciler.procs.items():
            self.parts.say(
                f"service {name}: adopted running runtime pid {proc.pid} (generation {proc.spec.generation})"
            )

    def _supervisor(self, runtime_user: RuntimeUser | None) -> Supervisor:
        """The one place that starts runtimes, with the user they run as (None: the agent's own)."""
        supervisor = self.parts.supervisor(self.data_dir / "logs")
        supervisor.runtime_user = runtime_user
        if runtime_user is not None:
            self.parts.say(f"runtimes run as user {runtime_user.name} (uid {runtime_user.uid})")
            _shut_to_runtimes(self.data_dir)
        return supervisor

    async def _enroll(self) -> None:
        """Exchange the token for an identity; an agent that owns its process then starts afresh (Reexec)."""
        assert self.state is not None
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
            self._lock.release()
            os.environ[INVENTORY_ENV] = self.hardware.SerializeToString().hex()
            raise Reexec()

    def _desired_revision(self) -> int:
        assert self.state is not None
        return self.state.desired().revision

    def _make_link(self) -> Link:
        assert self.identity is not None
        if self.link_factory is not None:
            return self.link_factory(self.identity)
        if self.config.transport == "mqtt":
            from agent.link.mqtt import MqttLink  # imported only when chosen

            return MqttLink(self.identity, broker=self.config.broker, ca_file=identity_dir(self.data_dir) / "ca.crt",
                            insecure=self.config.insecure)
        from agent.link.grpc import GrpcLink

        return GrpcLink(self.identity, identity_dir(self.data_dir), insecure=self.config.insecure)

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

    # ---- what the hub says ----

    def queue(self, message: agent_pb2.AgentMessage) -> None:
        """Hand one message to the outbox; it goes to the hub, in order, whenever the link is up."""
        assert self.outbox is not None
        self.outbox.append(message)
        self.outbox_changed.set()

    def flush_statuses(self) -> None:
        """Put the statuses still lingering into the outbox now."""
        if self.reports is not None:
            self.reports.flush()

    def _on_message(self, message: agent_pb2.HubMessage, requests: HubRequests) -> None:
        assert self.reconciler is not None and self.reports is not None
        kind = message.WhichOneof("body")
        if kind == "desired":
            self._on_desired(message.desired)
        elif kind == "ack":
            self.reports.ack(message.ack.seq)
        elif kind == "log_request":
            requests.answer_logs(message.log_request)
        elif kind == "profile_request":
            requests.answer_profile(message.profile_request)

    def _on_desired(self, signed: agent_pb2.SignedDesiredState) -> None:
        """Apply a signed desired state, or refuse it (and tell the hub) before anything is pulled or started."""
        assert self.reconciler is not None and self.reports is not None
        assert self.trust is not None and self.state is not None
        applied = self.state.desired().revision
        try:
            desired = self.trust.verify(signed, applied)
        except DesiredStateRefused as refusal:
            if self._last_refusal != (refusal.revision, refusal.reason):
                self._last_refusal = (refusal.revision, refusal.reason)
                self.parts.say(f"refused desired state revision {refusal.revision}: {refusal.reason}")
                self.reports.refuse(refusal.revision, refusal.reason, applied)
            return
        if self.reconciler.desired_changed(desired):
            names = ", ".join(f"{m.name}@{m.generation}" for m in desired.services) or "nothing"
            self.parts.say(f"desired state revision {desired.revision}: {names}")
        self.reports.acknowledge_desired()

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
        assert self.reconciler is not None and self.state is not None and self.outbox is not None
        assert self.identity is not None and self.reports is not None
        reconciler, outbox = self.reconciler, self.outbox
        requests = HubRequests(self.state, reconciler.supervisor.log_path, self.queue, self.config.runtime_host)
        rounds = TelemetryRounds(self.telemetry, lambda: reconciler.procs, self.queue, outbox.take_dropped,
                                 labels=self.config.labels, interval_s=self.config.telemetry_s or DEFAULT_TELEMETRY_S,
                                 figures_in_memory=self.parts.figures_in_memory)  # fmt: skip

        def on_welcome(welcome: agent_pb2.Welcome) -> None:
            if not self.config.telemetry_s and welcome.telemetry_interval_s > 0:
                rounds.set_interval(welcome.telemetry_interval_s)

        session = HubSession(self._make_link, self._hello, outbox, self.outbox_changed,
                             lambda message: self._on_message(message, requests), on_welcome=on_welcome,
                             say=self.parts.say, device_id=self.identity.device_id, transport=self.config.transport,
                             heartbeat_s=self.config.heartbeat_s, started=self.started)  # fmt: skip
        metrics = None
        if self.config.metrics_port is not None:  # off by default: loaded only when asked for
            from agent.metrics import serve_agent_metrics

            metrics = await serve_agent_metrics(
                device=self.identity.device_id, transport=self.config.transport, started=self.started,
                state=self.state, outbox=outbox, reconciler=reconciler, session=session,
                host=self.config.metrics_host, port=self.config.metrics_port, say=self.parts.say,
            )  # fmt: skip
        tasks = [
            asyncio.create_task(reconciler.run(), name="reconciler"),
            asyncio.create_task(session.run(), name="session"),
            asyncio.create_task(rounds.run(), name="telemetry"),
        ]
        stopper = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stopper and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            if metrics is not None:
                await metrics.close()
            for t in [*tasks, stopper]:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await reconciler.stop_all()
            if not self.config.keep_runtimes:
                for name in await asyncio.to_thread(reconciler.stop_runtimes):
                    self.parts.say(f"service {name}: runtime stopped (agent shutting down)")
            self.reports.close()  # what the reconciler said last reaches the hub after a restart
            outbox.flush()  # acked rows, so a restart does not resend them
            self.state.close()
            if self.config.owns_process:  # a fleet shares the client across agents and closes it itself
                self.parts.registry_client.close()
            self._lock.release()
            self.parts.say("stopped")


def _shut_to_runtimes(data_dir: Path) -> None:
    """Let the runtime user pass through the data dir to its service's folder (search only, no listing), and
    nothing more of the agent's: the identity folder is 0700 already; the agent's database (service keys,
    token secrets; SQLite gives its -wal and -shm files the database's mode), the cache (a runtime reads its
    blobs through hardlinks in its own folder) and the logs (it writes through a descriptor) become private."""
    for folder in (data_dir, data_dir / "services"):
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o711)
    for private in (data_dir / "cache", data_dir / "logs"):
        private.mkdir(parents=True, exist_ok=True)
        os.chmod(private, 0o700)
    for name in ("agent.db", "agent.db-wal", "agent.db-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(data_dir / name, 0o600)


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
