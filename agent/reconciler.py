"""Level-triggered reconciler: desired state (the hub's manifests) vs actual state (runtimes), per service.

Every pass compares the last applied DesiredState with what runs and starts one task per
service that needs work; a pass runs on every DesiredState, when a task ends, when a runtime
exits, after an agent restart and on a resync timer, and is idempotent: a pass with nothing
to do does nothing.

Per service the state row keeps `generation` = the generation serving now (it was healthy),
`last_good_generation` = the one healthy before it, and `failed_generation` = the newest
generation that failed to start (not retried until the hub sends a newer one).

Ports: with a manifest port of 0 the new generation gets a free port and the old one keeps
serving until the new one is healthy (zero downtime, the scoring URI moves). When both
generations want the same fixed port, the old one is stopped first and restarted on rollback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import shutil
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from agent import timers
from agent.cache import ArtifactCache, CacheError
from agent.environments import EnvironmentCache, EnvironmentError_
from agent.layout import Layout, LayoutError, blobs_of, lay_out
from agent.state import AgentState, ServiceRecord
from agent.supervisor import (
    Backoff,
    RuntimeProcess,
    RuntimeSpec,
    RuntimeUnhealthy,
    Supervisor,
    free_port,
    process_start_time,
    tail,
)
from protos.edgeport.v1 import agent_pb2

DEFAULT_HEALTH_TIMEOUT_S = 120
SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# A pass runs whenever something may need work: a new desired state, a task ending, a runtime exiting (watched
# through a pidfd, see Supervisor.watch_exit), a pull's backoff running out. The timer is only the safety net
# of a level-triggered loop; where exits cannot be watched it is what notices them, so it is short there.
RESYNC_S = 30.0
POLL_S = 2.0
# A registry that keeps answering a pull with an error (a blob damaged on the hub's disk answers 500) is retried
# for this long, then the generation fails with the registry's answer. A registry that cannot be reached at all
# (the device is offline) is retried for as long as it takes: the link being down is no fault of the generation.
DEFAULT_PULL_RETRY_WINDOW_S = 300.0

Report = Callable[[agent_pb2.DeploymentStatus], None]


@dataclass(frozen=True)
class Action:
    """What one reconcile pass decided for one service."""

    kind: str  # deploy | restart | remove
    service: str
    manifest: agent_pb2.ServiceManifest | None = None


def plan(
    desired: Iterable[agent_pb2.ServiceManifest],
    records: Mapping[str, ServiceRecord],
    running: Callable[[str], bool],
) -> list[Action]:
    """The actions that bring `records` (actual) to `desired`; [] when they already match.

    - a desired generation not serving and not known to fail → deploy it;
    - the serving generation's process is gone → restart it (the caller applies backoff);
    - a service no longer desired → remove it.
    """
    actions: list[Action] = []
    wanted = {}
    for m in desired:
        wanted[m.name] = m
        rec = records.get(m.name)
        serving = rec.generation if rec else 0
        failed = rec.failed_generation if rec else 0
        if m.generation != serving and m.generation != failed:
            actions.append(Action("deploy", m.name, m))
        elif serving and not running(m.name):
            actions.append(Action("restart", m.name, rec.manifest if rec else None))
    for name in records:
        if name not in wanted:
            actions.append(Action("remove", name))
    return actions


def _status(
    m: agent_pb2.ServiceManifest | None,
    name: str,
    phase: agent_pb2.Phase,
    message: str = "",
    *,
    scoring_uri: str = "",
    swagger_uri: str = "",
    serving_generation: int = 0,
    log_tail: Iterable[str] = (),
    restarts: int = 0,
) -> agent_pb2.DeploymentStatus:
    # The defaults are proto3's own (fields without presence): passing them equals leaving them out.
    return agent_pb2.DeploymentStatus(
        service=name,
        generation=m.generation if m else 0,
        phase=phase,
        message=message,
        scoring_uri=scoring_uri,
        swagger_uri=swagger_uri,
        serving_generation=serving_generation,
        log_tail=log_tail,
        restarts=restarts,
    )


class Reconciler:
    """Converges the runtimes of one agent to its desired state."""

    def __init__(
        self,
        state: AgentState,
        cache: ArtifactCache,
        envs: EnvironmentCache,
        supervisor: Supervisor,
        report: Report,
        *,
        services_dir: Path,
        default_registry: str,
        host: str = "127.0.0.1",
        advertise_host: str | None = None,
        pull_retry_window_s: float = DEFAULT_PULL_RETRY_WINDOW_S,
    ) -> None:
        self.state = state
        self.cache = cache
        self.envs = envs
        self.supervisor = supervisor
        self.report = report
        self.services_dir = Path(services_dir).resolve()  # runtimes get these paths and run with another cwd
        self.default_registry = default_registry
        self.host = host
        self.advertise_host = advertise_host or ("127.0.0.1" if host in ("0.0.0.0", "") else host)
        self.procs: dict[str, RuntimeProcess] = {}
        self.backoffs: dict[str, Backoff] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.pull_backoffs: dict[str, Backoff] = {}
        self._restarted_at_start: set[str] = set()
        self.retry_at: dict[str, float] = {}  # service -> monotonic time before which a failed pull is not retried
        self.pull_retry_window_s = pull_retry_window_s
        # service -> (generation, monotonic time) of the first pull the registry refused, while it keeps refusing
        self.refused_since: dict[str, tuple[int, float]] = {}
        self._exit_watches: dict[str, Callable[[], None]] = {}  # service -> stops the watch on its runtime's exit
        self._polling = False  # a runtime's exit could not be watched: passes run every POLL_S to notice it
        self._wake = asyncio.Event()
        self._same_filesystem: bool | None = None

    # ---- entry points ----

    def resume(self) -> None:
        """After an agent start: adopt runtimes that still run; kill half-started ones an earlier agent left."""
        for key, raw in self._starting_markers():
            info = json.loads(raw)
            if info["pid"] > 0 and process_start_time(info["pid"]) == info["pid_start"]:
                proc = RuntimeProcess(self._spec_stub(info), info["pid"], info["pid_start"], Path("/dev/null"))
                self.supervisor.stop(proc)
            self.state.put(key, "")
        for rec in self.state.services().values():
            if not rec.generation or rec.manifest is None:
                continue
            spec = self._spec(rec.manifest, rec.port, rec.grpc_port, python="")
            adopted = self.supervisor.adopt(spec, rec.pid, rec.pid_start)
            if adopted is not None:
                self._serve(rec.name, adopted)

    def desired_changed(self, desired: agent_pb2.DesiredState) -> bool:
        """Apply a DesiredState from the hub (ignored when older than the one applied); wake the loop.

        A manifest whose service name could not be a folder name (path separators, `..`) is left out
        and reported FAILED: names become paths under the data dir, so they are checked here.
        """
        if desired.revision < self.state.desired().revision:
            return False
        bad = [m for m in desired.services if not SERVICE_NAME.fullmatch(m.name) or m.name in (".", "..")]
        if bad:
            desired = agent_pb2.DesiredState(
                revision=desired.revision, services=[m for m in desired.services if m not in bad]
            )
            for m in bad:
                message = f"service name {m.name!r} is not allowed (letters, digits, '.', '_', '-')"
                self.report(_status(m, m.name, agent_pb2.FAILED, message))
        stored = self.state.save_desired(desired)
        self._wake.set()
        return stored

    def wake(self) -> None:
        """Ask for a pass now."""
        self._wake.set()

    async def run(self) -> None:
        """Reconcile forever: on every wake-up, and every RESYNC_S (POLL_S where exits cannot be watched)."""
        loop = asyncio.get_running_loop()
        while True:
            self.reconcile_once()
            # A timer that sets the wake-up event, not wait_for: wait_for makes and cancels a task every
            # tick, which for a fleet of thousands of idle agents on one loop was a large part of its CPU.
            tick = timers.call_later(loop, POLL_S if self._polling else RESYNC_S, self._wake.set)
            await self._wake.wait()
            tick.cancel()
            self._wake.clear()

    def reconcile_once(self) -> list[Action]:
        """One level-triggered pass: start a task for each service that needs work and has none running."""
        actions = plan(self.state.desired().services, self.state.service_rows(), self._running)
        started = []
        for action in actions:
            if action.service in self.tasks:
                continue  # busy; the pass after the task ends looks again
            if action.kind == "deploy" and self.retry_at.get(action.service, 0.0) > time.monotonic():
                continue  # a pull failed for a passing reason: wait out its backoff
            if action.kind == "deploy":
                coro = self._deploy(action.manifest)  # type: ignore[arg-type]
            elif action.kind == "restart":
                coro = self._restart(action.service)
            else:
                coro = self._remove(action.service)
            task = asyncio.get_running_loop().create_task(coro, name=f"{action.kind}:{action.service}")
            self.tasks[action.service] = task
            task.add_done_callback(functools.partial(self._task_done, action.service))
            started.append(action)
        return started

    async def stop_all(self) -> None:
        """Cancel tasks and exit watches (runtimes keep running: a restarted agent adopts them)."""
        for stop_watch in self._exit_watches.values():
            stop_watch()
        self._exit_watches.clear()
        for task in list(self.tasks.values()):
            task.cancel()
        for task in list(self.tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def reports(self) -> list[agent_pb2.ServiceReport]:
        """What runs now, for Hello."""
        return [
            agent_pb2.ServiceReport(
                service=r.name, generation=r.generation, phase=r.phase, scoring_uri=self._uri(r.port) if r.port else ""
            )
            for r in self.state.services().values()
        ]

    # ---- helpers ----

    def _task_done(self, name: str, task: asyncio.Task[None]) -> None:
        self.tasks.pop(name, None)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            rec = self.state.service(name)
            self.report(_status(rec.manifest if rec else None, name, agent_pb2.FAILED, f"agent error: {exc!r}"))
        self._wake.set()

    def _serve(self, name: str, proc: RuntimeProcess) -> None:
        """`proc` is the runtime of `name` now: its exit wakes a pass (instead of waiting for a poll)."""
        self._forget(name)
        self.procs[name] = proc
        stop_watch = self.supervisor.watch_exit(proc, self._wake.set)
        if stop_watch is None:
            self._polling = True
        else:
            self._exit_watches[name] = stop_watch

    def _forget(self, name: str) -> RuntimeProcess | None:
        """`name` has no runtime of ours any more (stopped or gone): drop it and its exit watch."""
        stop_watch = self._exit_watches.pop(name, None)
        if stop_watch is not None:
            stop_watch()
        return self.procs.pop(name, None)

    def _running(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.alive()

    def _registry(self, m: agent_pb2.ServiceManifest) -> str:
        """Where to pull from: the manifest's registry, unless it names an unspecified address (a hub bound to
        0.0.0.0 cannot be reached there from another machine): then the hub the agent enrolled with."""
        if not m.registry:
            return self.default_registry
        host = urllib.parse.urlsplit(m.registry if "://" in m.registry else f"http://{m.registry}").hostname
        return self.default_registry if host in (None, "", "0.0.0.0", "::") else m.registry

    def _uri(self, port: int, path: str = "/score") -> str:
        return f"http://{self.advertise_host}:{port}{path}"

    def _gen_dir(self, name: str, generation: int) -> Path:
        return self.services_dir / name / str(generation)

    def _starting_markers(self) -> list[tuple[str, str]]:
        return [(k, v) for k, v in self.state.keys("starting:") if v]

    def _spec_stub(self, info: dict) -> RuntimeSpec:
        return RuntimeSpec(service=info.get("service", ""), generation=0, python="", model_dir=Path("."), port=0,
                           grpc_port=0)  # fmt: skip

    def _spec(self, m: agent_pb2.ServiceManifest, port: int, grpc_port: int, python: str) -> RuntimeSpec:
        gen_dir = self._gen_dir(m.name, m.generation)
        secrets = {}
        if m.auth.primary_key:
            secrets["EDGEPORT_PRIMARY_KEY"] = m.auth.primary_key
        if m.auth.secondary_key:
            secrets["EDGEPORT_SECONDARY_KEY"] = m.auth.secondary_key
        if m.auth.token_secret:
            secrets["EDGEPORT_TOKEN_SECRET"] = m.auth.token_secret
        return RuntimeSpec(
            service=m.name,
            generation=m.generation,
            python=python,
            model_dir=gen_dir / "models",
            source_dir=(gen_dir / "source") if m.source.files else None,
            entry_script=m.source.entry_script if m.source.files else "",
            onnx_file=m.runtime.onnx_file,
            port=port,
            grpc_port=grpc_port,
            host=self.host,
            auth_mode=m.auth.mode or "none",
            secrets=secrets,
            cpus=m.resources.cpu,
            execution_providers=list(m.runtime.execution_providers),
            quantize_int8=m.runtime.quantize_int8,
            max_batch_size=m.runtime.max_batch_size,
            max_batch_delay_ms=m.runtime.max_batch_delay_ms,
            max_body_bytes=m.runtime.max_body_bytes,
            environment=dict(m.runtime.environment_variables),
        )

    async def _prepare(self, m: agent_pb2.ServiceManifest) -> tuple[Layout, str]:
        """Pull every blob the manifest needs, lay out its folders, build its environment."""
        registry = self._registry(m)
        refs = blobs_of(m)
        missing = [(repo, ref) for repo, ref in refs if not self.cache.has(ref.digest)]
        total = sum(ref.size for _, ref in missing)
        if missing:
            self.report(_status(m, m.name, agent_pb2.PULLING, f"pulling {len(missing)} of {len(refs)} blobs"))
        done_bytes = 0
        last_report = time.monotonic()
        gen_dir = self._gen_dir(m.name, m.generation)
        for i, (repo, ref) in enumerate(missing, 1):
            await self.cache.fetch(registry, repo, ref.digest, ref.size)
            done_bytes += ref.size
            if time.monotonic() - last_report > 2 or i == len(missing):
                last_report = time.monotonic()
                self.report(
                    _status(
                        m, m.name, agent_pb2.PULLING, f"pulled {i}/{len(missing)} blobs ({done_bytes}/{total} bytes)"
                    )
                )
        if self._links_possible():  # hardlinks: a few metadata calls, done here rather than via a thread
            layout = lay_out(self.cache, m, gen_dir)
        else:  # copies, which can take long for big models
            layout = await asyncio.to_thread(lay_out, self.cache, m, gen_dir)
        # No requirements: no venv to build, so no trip through the thread pool either.
        python = self.envs.shared_python(m.environment)
        if python is None:
            python = await asyncio.to_thread(self.envs.python_for, m.environment)
        return layout, python

    def _links_possible(self) -> bool:
        """Whether the cache and the services folder share a filesystem (lay_out then hardlinks, never copies)."""
        if self._same_filesystem is None:
            self.services_dir.mkdir(parents=True, exist_ok=True)
            self._same_filesystem = self.cache.root.stat().st_dev == self.services_dir.stat().st_dev
        return self._same_filesystem

    async def _start_and_wait(self, spec: RuntimeSpec, timeout_s: float) -> RuntimeProcess:
        """Start a runtime and wait for health; on failure it is stopped and RuntimeUnhealthy raised."""
        marker = f"starting:{spec.service}"
        proc = self.supervisor.start(spec)
        self.state.put(marker, json.dumps({"service": spec.service, "pid": proc.pid, "pid_start": proc.pid_start}))
        try:
            await self.supervisor.wait_healthy(proc, timeout_s)
        except BaseException:
            await asyncio.to_thread(self.supervisor.stop, proc)
            self.state.put(marker, "")
            raise
        return proc

    def _record_serving(self, rec: ServiceRecord, m: agent_pb2.ServiceManifest, proc: RuntimeProcess) -> None:
        if rec.generation and rec.generation != m.generation:
            rec.last_good_generation, rec.last_good_manifest = rec.generation, rec.manifest
        rec.generation, rec.manifest = m.generation, m
        rec.port, rec.grpc_port = proc.spec.port, proc.spec.grpc_port
        rec.pid, rec.pid_start = proc.pid, proc.pid_start
        rec.phase, rec.message = agent_pb2.HEALTHY, ""
        with self.state.transaction():  # the row and the cleared start marker in one commit
            self.state.save_service(rec)
            self.state.put(f"starting:{m.name}", "")
        self._serve(m.name, proc)

    # ---- the three kinds of work ----

    async def _deploy(self, m: agent_pb2.ServiceManifest) -> None:
        rec = self.state.service(m.name) or ServiceRecord(name=m.name)
        old = self.procs.get(m.name) if rec.generation else None
        self.report(_status(m, m.name, agent_pb2.PENDING, f"deploying generation {m.generation}"))
        try:
            _, python = await self._prepare(m)
        except CacheError as exc:
            if exc.transient:  # network or hub trouble: try again after a backoff, within bounds
                delay = self._pull_retry_delay(m, exc)
                if delay is None:
                    self._forget_pull_failures(m.name)
                    window = f"{self.pull_retry_window_s:g}s"
                    await self._fail(rec, m, f"{exc} (still refused after retrying for {window})", [], old)
                    return
                self.retry_at[m.name] = time.monotonic() + delay
                timers.call_later(asyncio.get_running_loop(), delay, self._wake.set)  # the retry's pass
                self.report(_status(m, m.name, agent_pb2.PULLING, f"{exc}; retrying in {delay:g}s"))
                return
            await self._fail(rec, m, str(exc), [], old)
            return
        except (LayoutError, EnvironmentError_) as exc:
            await self._fail(rec, m, str(exc), [], old)
            return
        except OSError as exc:  # disk full, permissions: say so rather than crash the task
            await self._fail(rec, m, f"preparing files failed: {exc}", [], old)
            return
        self._forget_pull_failures(m.name)
        port = m.port or free_port(self.host)
        grpc_port = free_port(self.host)
        stopped_old = False
        if old is not None and old.alive() and old.spec.port == port:
            # Both generations want the same fixed port: the old one must go first (restarted on rollback).
            self.report(_status(m, m.name, agent_pb2.STARTING,
                                f"stopping generation {rec.generation} first: both use port {port}"))  # fmt: skip
            await asyncio.to_thread(self.supervisor.stop, old)
            stopped_old = True
        spec = self._spec(m, port, grpc_port, python)
        self.report(_status(m, m.name, agent_pb2.STARTING, f"starting runtime on port {port}"))
        try:
            proc = await self._start_and_wait(spec, m.health_timeout_s or DEFAULT_HEALTH_TIMEOUT_S)
        except RuntimeUnhealthy as exc:
            await self._fail(rec, m, exc.reason, exc.log_tail, None if stopped_old else old)
            return
        if old is not None and not stopped_old:
            await asyncio.to_thread(self.supervisor.stop, old)
        previous = rec.generation
        with self.state.transaction():  # the serving row and its Healthy report (the outbox row): one commit
            self._record_serving(rec, m, proc)
            self.report(
                _status(m, m.name, agent_pb2.HEALTHY, f"generation {m.generation} healthy on port {port}",
                        scoring_uri=self._uri(port), swagger_uri=self._uri(port, "/swagger.json"),
                        serving_generation=m.generation)
            )  # fmt: skip
        self.backoffs.pop(m.name, None)
        self._cleanup_generations(m.name, keep={m.generation, previous})
        self._evict()

    def _pull_retry_delay(self, m: agent_pb2.ServiceManifest, exc: CacheError) -> float | None:
        """Seconds until the next try of a pull that failed for a passing reason; None once a registry that
        keeps refusing it has been retried for the whole window."""
        delay = self.pull_backoffs.setdefault(m.name, Backoff()).next_delay()
        if not exc.status:  # not answered at all (offline, cut): no bound, see DEFAULT_PULL_RETRY_WINDOW_S
            return delay
        now = time.monotonic()
        generation, since = self.refused_since.get(m.name, (0, now))
        if generation != m.generation:
            since = now
        self.refused_since[m.name] = (m.generation, since)
        left = since + self.pull_retry_window_s - now
        if left <= 0:
            return None
        return max(0.1, round(min(delay, left), 1))  # the last try comes as the window closes, not a backoff later

    def _forget_pull_failures(self, name: str) -> None:
        self.pull_backoffs.pop(name, None)
        self.retry_at.pop(name, None)
        self.refused_since.pop(name, None)

    async def _fail(
        self,
        rec: ServiceRecord,
        m: agent_pb2.ServiceManifest,
        reason: str,
        log_tail: list[str],
        old: RuntimeProcess | None,
    ) -> None:
        """A new generation failed: bring back the serving one (ROLLED_BACK) or report FAILED when there is none."""
        rec.failed_generation = m.generation
        self.state.save_service(rec)
        if not rec.generation or rec.manifest is None:
            rec.phase, rec.message = agent_pb2.FAILED, reason
            self.state.save_service(rec)
            self.report(_status(m, m.name, agent_pb2.FAILED, reason, log_tail=log_tail))
            return
        restored = old is not None and old.alive()
        if not restored:
            try:
                await self._restart_serving(rec)
                restored = True
            except (RuntimeUnhealthy, CacheError, LayoutError, EnvironmentError_) as exc:
                reason += f"; generation {rec.generation} did not come back either: {exc}"
        phase = agent_pb2.ROLLED_BACK if restored else agent_pb2.FAILED
        message = f"generation {m.generation} failed: {reason}"
        if restored:
            message += f"; rolled back to generation {rec.generation}"
        rec.phase, rec.message = (agent_pb2.HEALTHY if restored else agent_pb2.FAILED), message
        self.state.save_service(rec)
        self.report(
            _status(m, m.name, phase, message, log_tail=log_tail, serving_generation=rec.generation if restored else 0,
                    scoring_uri=self._uri(rec.port) if restored else "",
                    swagger_uri=self._uri(rec.port, "/swagger.json") if restored else "")
        )  # fmt: skip

    async def _restart_serving(self, rec: ServiceRecord) -> None:
        """(Re)start the serving generation of `rec` on its port (rollback, crash restart)."""
        m = rec.manifest
        assert m is not None
        gen_dir = self._gen_dir(m.name, m.generation)
        if not (gen_dir / "models").exists():
            await self._prepare(m)  # blobs are kept for serving generations: this re-lays out from the cache
        python = await asyncio.to_thread(self.envs.python_for, m.environment)
        spec = self._spec(m, rec.port, rec.grpc_port or free_port(self.host), python)
        proc = await self._start_and_wait(spec, m.health_timeout_s or DEFAULT_HEALTH_TIMEOUT_S)
        rec.pid, rec.pid_start, rec.grpc_port = proc.pid, proc.pid_start, spec.grpc_port
        self.state.save_service(rec)
        self.state.put(f"starting:{m.name}", "")
        self._serve(m.name, proc)

    async def _restart(self, name: str) -> None:
        rec = self.state.service(name)
        if rec is None or rec.manifest is None:
            return
        proc = self._forget(name)
        backoff = self.backoffs.setdefault(name, Backoff())
        if rec.pid == 0 and proc is None and name not in self._restarted_at_start:
            self._restarted_at_start.add(name)  # once: if this start fails, later tries back off like crashes
            # Stopped on purpose with the agent (see stop_runtimes): start again at once, not a crash.
            self.report(_status(rec.manifest, name, agent_pb2.STARTING, f"starting generation {rec.generation} again",
                                serving_generation=rec.generation))  # fmt: skip
        else:
            code = proc.exit_code() if proc else None
            delay = backoff.next_delay()
            rec.restarts += 1
            rec.phase = agent_pb2.RESTARTING
            how = f"runtime exited (code {code})" if code is not None else "runtime not running"
            rec.message = f"{how}; restart {rec.restarts} in {delay:g}s"
            self.state.save_service(rec)
            self.report(_status(rec.manifest, name, agent_pb2.RESTARTING, rec.message, restarts=rec.restarts,
                                log_tail=self.supervisor_tail(rec), serving_generation=rec.generation))  # fmt: skip
            await asyncio.sleep(delay)
        try:
            await self._restart_serving(rec)
        except (RuntimeUnhealthy, CacheError, LayoutError, EnvironmentError_) as exc:
            rec.phase, rec.message = agent_pb2.RESTARTING, f"restart {rec.restarts} failed: {exc}"
            self.state.save_service(rec)
            return  # the next pass sees it not running and tries again, with a longer delay
        backoff.healthy()
        rec.phase = agent_pb2.HEALTHY
        rec.message = f"restarted after a crash (restart {rec.restarts})" if rec.restarts else "running again"
        with self.state.transaction():  # the row and its report: one commit
            self.state.save_service(rec)
            self.report(
                _status(rec.manifest, name, agent_pb2.HEALTHY, rec.message, restarts=rec.restarts,
                        scoring_uri=self._uri(rec.port), swagger_uri=self._uri(rec.port, "/swagger.json"),
                        serving_generation=rec.generation)
            )  # fmt: skip

    def stop_runtimes(self) -> list[str]:
        """Stop every runtime on purpose (agent shutdown); the next agent starts them again without backoff.

        Blocking (run it in a thread), after `stop_all`, which ends the exit watches on the loop."""
        stopped = []
        for name, proc in list(self.procs.items()):
            self.supervisor.stop(proc)
            del self.procs[name]
            rec = self.state.service(name)
            if rec is not None:
                rec.pid, rec.pid_start = 0, 0
                self.state.save_service(rec)
            stopped.append(name)
        return stopped

    def supervisor_tail(self, rec: ServiceRecord, lines: int = 30) -> list[str]:
        """The serving generation's last log lines."""
        return tail(self.supervisor.log_path(rec.name, rec.generation), lines)

    async def _remove(self, name: str) -> None:
        rec = self.state.service(name)
        proc = self._forget(name)
        if proc is not None:
            await asyncio.to_thread(self.supervisor.stop, proc)
        elif rec is not None and rec.pid:
            spec = RuntimeSpec(service=name, generation=rec.generation, python="", model_dir=Path("."), port=rec.port,
                               grpc_port=0)  # fmt: skip
            await asyncio.to_thread(
                self.supervisor.stop, RuntimeProcess(spec, rec.pid, rec.pid_start, Path("/dev/null"))
            )
        shutil.rmtree(self.services_dir / name, ignore_errors=True)
        self.state.delete_service(name)
        self.backoffs.pop(name, None)
        self._forget_pull_failures(name)
        self._evict()
        self.report(_status(rec.manifest if rec else None, name, agent_pb2.REMOVED, "stopped and cleaned up"))

    # ---- housekeeping ----

    def _cleanup_generations(self, name: str, keep: set[int]) -> None:
        folder = self.services_dir / name
        if folder.exists():
            for gen in folder.iterdir():
                if gen.name.isdigit() and int(gen.name) not in keep:
                    shutil.rmtree(gen, ignore_errors=True)

    def _evict(self) -> None:
        """Trim the cache, keeping every blob a desired, serving or last-good generation uses."""
        keep: set[str] = set()
        manifests = list(self.state.desired().services)
        for rec in self.state.services().values():
            manifests += [m for m in (rec.manifest, rec.last_good_manifest) if m is not None]
        for m in manifests:
            keep.update(ref.digest for _, ref in blobs_of(m))
        self.cache.evict(keep)
