"""The work a reconcile pass starts for one service, and the runtimes that work leaves running.

- deploy: pull the generation's blobs (retrying a refused pull for a bounded window), lay out its folders,
  build its environment, start its runtime, wait for health, then switch over: the old generation keeps
  serving until the new one is healthy, unless both want one fixed port;
- a generation that fails goes back to the serving one (ROLLED_BACK), or is FAILED when there is none;
- restart a serving runtime that exited, with backoff; remove a service no longer desired;
- a service with TLS first gets its certificate: the agent makes the runtime's key, reports a request for it
  and waits (Pending) until a desired state brings the certificate (agent/service_tls.py).

Per service the state row keeps `generation` = the generation serving now (it was healthy),
`last_good_generation` = the one healthy before it, and `failed_generation` = the newest generation
that failed to start (not retried until the hub sends a newer one). Each runtime's exit is watched
(a pidfd) so it wakes the reconciler at once.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from agent import timers
from agent.cache import ArtifactCache, CacheError
from agent.environments import EnvironmentCache, EnvironmentError_
from agent.layout import Layout, LayoutError, blobs_of, lay_out
from agent.manifests import registry_for, runtime_spec, service_status
from agent.service_tls import WAITING, ServiceTlsError, runtime_key, tls_request, usable_files
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
# A registry that keeps answering a pull with an error (a blob damaged on the hub's disk answers 500) is retried
# for this long, then the generation fails with the registry's answer. A registry that cannot be reached at all
# (the device is offline) is retried for as long as it takes: the link being down is no fault of the generation.
DEFAULT_PULL_RETRY_WINDOW_S = 300.0
# While a service waits for its TLS certificate, its request is sent again after 5 s, doubling up to a minute (a new
# desired state with the certificate starts the deploy at once; this covers a lost request or answer, and keeps
# a request the hub refuses from being sent every few seconds for ever).
TLS_RETRY_S = 5.0
TLS_RETRY_MAX_S = 60.0

Report = Callable[[agent_pb2.DeploymentStatus], None]


class ServiceWork:
    """Carries out the reconciler's actions for the services of one agent; `wake` asks it for a pass."""

    def __init__(
        self,
        state: AgentState,
        cache: ArtifactCache,
        envs: EnvironmentCache,
        supervisor: Supervisor,
        report: Report,
        wake: Callable[[], None],
        *,
        services_dir: Path,
        default_registry: str,
        host: str = "127.0.0.1",
        advertise_host: str | None = None,
        pull_retry_window_s: float = DEFAULT_PULL_RETRY_WINDOW_S,
        identity_dir: Path | None = None,
    ) -> None:
        self.state = state
        self.identity_dir = identity_dir  # the device's key and certificate: sign TLS requests
        self.cache = cache
        self.envs = envs
        self.supervisor = supervisor
        self.report = report
        self.wake = wake
        self.services_dir = Path(services_dir).resolve()  # runtimes get these paths and run with another cwd
        self.default_registry = default_registry
        self.host = host
        self.advertise_host = advertise_host or ("127.0.0.1" if host in ("0.0.0.0", "") else host)
        self.procs: dict[str, RuntimeProcess] = {}
        self.backoffs: dict[str, Backoff] = {}
        self.pull_backoffs: dict[str, Backoff] = {}
        self._restarted_at_start: set[str] = set()
        self.retry_at: dict[str, float] = {}  # service -> monotonic time before which a failed pull is not retried
        self.pull_retry_window_s = pull_retry_window_s
        # service -> (generation, monotonic time) of the first pull the registry refused, while it keeps refusing
        self.refused_since: dict[str, tuple[int, float]] = {}
        self._exit_watches: dict[str, Callable[[], None]] = {}  # service -> stops the watch on its runtime's exit
        self.polling = False  # a runtime's exit could not be watched: the reconciler must poll to notice it
        self._same_filesystem: bool | None = None
        self.tls_waiting: dict[str, Backoff] = {}  # services waiting for their TLS certificate from the hub

    def stop_watches(self) -> None:
        """End every exit watch (the agent stops; runtimes keep running: a restarted agent adopts them)."""
        for stop_watch in self._exit_watches.values():
            stop_watch()
        self._exit_watches.clear()

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

    def _serve(self, name: str, proc: RuntimeProcess) -> None:
        """`proc` is the runtime of `name` now: its exit wakes a pass (instead of waiting for a poll)."""
        self._forget(name)
        self.procs[name] = proc
        stop_watch = self.supervisor.watch_exit(proc, self.wake)
        if stop_watch is None:
            self.polling = True
        else:
            self._exit_watches[name] = stop_watch

    def _forget(self, name: str) -> RuntimeProcess | None:
        """`name` has no runtime of ours any more (stopped or gone): drop it and its exit watch."""
        stop_watch = self._exit_watches.pop(name, None)
        if stop_watch is not None:
            stop_watch()
        return self.procs.pop(name, None)

    def running(self, name: str) -> bool:
        """Whether the runtime serving `name` runs."""
        proc = self.procs.get(name)
        return proc is not None and proc.alive()

    def uri(self, port: int, path: str = "/score", *, tls: bool = False) -> str:
        """The address clients reach a runtime on `port` at (`tls`: https)."""
        return f"{'https' if tls else 'http'}://{self.advertise_host}:{port}{path}"

    def _tls_ready(self, m: agent_pb2.ServiceManifest) -> bool:
        """Whether `m`'s runtime has its TLS files (written now); if not, ask the hub for them and wait.

        ServiceTlsError when what the hub sent cannot be used, or the request cannot be made."""
        if not m.tls.enabled:
            return True
        service_dir = self.services_dir / m.name
        key = runtime_key(service_dir)
        if usable_files(m, service_dir, key) is not None:
            self.tls_waiting.pop(m.name, None)
            return True
        if self.identity_dir is None:
            raise ServiceTlsError("this agent has no device identity to ask the hub for a TLS certificate with")
        status = service_status(m, m.name, agent_pb2.PENDING, WAITING)
        status.tls_request.CopyFrom(tls_request(m.name, key, self.advertise_host, self.identity_dir))
        delay = self.tls_waiting.setdefault(m.name, Backoff(TLS_RETRY_S, TLS_RETRY_MAX_S)).next_delay()
        self.retry_at[m.name] = time.monotonic() + delay
        timers.call_later(asyncio.get_running_loop(), delay, self.wake)
        self.report(status)
        return False

    def _gen_dir(self, name: str, generation: int) -> Path:
        return self.services_dir / name / str(generation)

    def _starting_markers(self) -> list[tuple[str, str]]:
        return [(k, v) for k, v in self.state.keys("starting:") if v]

    def _spec_stub(self, info: dict) -> RuntimeSpec:
        return RuntimeSpec(service=info.get("service", ""), generation=0, python="", model_dir=Path("."), port=0,
                           grpc_port=0)  # fmt: skip

    def _spec(self, m: agent_pb2.ServiceManifest, port: int, grpc_port: int, python: str) -> RuntimeSpec:
        return runtime_spec(m, self._gen_dir(m.name, m.generation), port, grpc_port, python, self.host)

    async def _prepare(self, m: agent_pb2.ServiceManifest) -> tuple[Layout, str]:
        """Pull every blob the manifest needs, lay out its folders, build its environment."""
        registry = registry_for(m, self.default_registry)
        refs = blobs_of(m)
        missing = [(repo, ref) for repo, ref in refs if not self.cache.has(ref.digest)]
        total = sum(ref.size for _, ref in missing)
        if missing:
            self.report(service_status(m, m.name, agent_pb2.PULLING, f"pulling {len(missing)} of {len(refs)} blobs"))
        done_bytes = 0
        last_report = time.monotonic()
        gen_dir = self._gen_dir(m.name, m.generation)
        for i, (repo, ref) in enumerate(missing, 1):
            await self.cache.fetch(registry, repo, ref.digest, ref.size)
            done_bytes += ref.size
            if time.monotonic() - last_report > 2 or i == len(missing):
                last_report = time.monotonic()
                self.report(
                    service_status(
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

    async def deploy(self, m: agent_pb2.ServiceManifest) -> None:
        """Bring generation `m` up and switch to it; on failure roll back (or fail) and say why."""
        rec = self.state.service(m.name) or ServiceRecord(name=m.name)
        old = self.procs.get(m.name) if rec.generation else None
        try:
            if not self._tls_ready(m):
                return  # Pending until a desired state brings the certificate
        except (ServiceTlsError, ValueError, OSError) as exc:
            await self._fail(rec, m, f"TLS: {exc}", [], old)
            return
        self.report(service_status(m, m.name, agent_pb2.PENDING, f"deploying generation {m.generation}"))
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
                timers.call_later(asyncio.get_running_loop(), delay, self.wake)  # the retry's pass
                self.report(service_status(m, m.name, agent_pb2.PULLING, f"{exc}; retrying in {delay:g}s"))
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
            self.report(service_status(m, m.name, agent_pb2.STARTING,
                                f"stopping generation {rec.generation} first: both use port {port}"))  # fmt: skip
            await asyncio.to_thread(self.supervisor.stop, old)
            stopped_old = True
        spec = self._spec(m, port, grpc_port, python)
        self.report(service_status(m, m.name, agent_pb2.STARTING, f"starting runtime on port {port}"))
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
                service_status(m, m.name, agent_pb2.HEALTHY, f"generation {m.generation} healthy on port {port}",
                        scoring_uri=self.uri(port, tls=m.tls.enabled),
                        swagger_uri=self.uri(port, "/swagger.json", tls=m.tls.enabled),
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
            self.report(service_status(m, m.name, agent_pb2.FAILED, reason, log_tail=log_tail))
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
            service_status(m, m.name, phase, message, log_tail=log_tail,
                           serving_generation=rec.generation if restored else 0,
                           scoring_uri=self.uri(rec.port, tls=_tls(rec)) if restored else "",
                           swagger_uri=self.uri(rec.port, "/swagger.json", tls=_tls(rec)) if restored else "")
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

    async def restart(self, name: str) -> None:
        """Start the serving generation of `name` again after its runtime exited (with backoff)."""
        rec = self.state.service(name)
        if rec is None or rec.manifest is None:
            return
        proc = self._forget(name)
        backoff = self.backoffs.setdefault(name, Backoff())
        if rec.pid == 0 and proc is None and name not in self._restarted_at_start:
            self._restarted_at_start.add(name)  # once: if this start fails, later tries back off like crashes
            # Stopped on purpose with the agent (see stop_runtimes): start again at once, not a crash.
            again = f"starting generation {rec.generation} again"
            self.report(service_status(rec.manifest, name, agent_pb2.STARTING, again,
                                       serving_generation=rec.generation))  # fmt: skip
        else:
            code = proc.exit_code() if proc else None
            delay = backoff.next_delay()
            rec.restarts += 1
            rec.phase = agent_pb2.RESTARTING
            how = f"runtime exited (code {code})" if code is not None else "runtime not running"
            rec.message = f"{how}; restart {rec.restarts} in {delay:g}s"
            self.state.save_service(rec)
            self.report(service_status(rec.manifest, name, agent_pb2.RESTARTING, rec.message, restarts=rec.restarts,
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
                service_status(rec.manifest, name, agent_pb2.HEALTHY, rec.message, restarts=rec.restarts,
                        scoring_uri=self.uri(rec.port, tls=_tls(rec)),
                        swagger_uri=self.uri(rec.port, "/swagger.json", tls=_tls(rec)),
                        serving_generation=rec.generation)
            )  # fmt: skip

    def stop_runtimes(self) -> list[str]:
        """Stop every runtime on purpose (agent shutdown); the next agent starts them again without backoff.

        Blocking (run it in a thread), after `stop_watches`, which ends the exit watches on the loop."""
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

    async def remove(self, name: str) -> None:
        """Stop `name`'s runtime and delete its folders and row: it is no longer desired."""
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
        self.tls_waiting.pop(name, None)
        self._evict()
        self.report(service_status(rec.manifest if rec else None, name, agent_pb2.REMOVED, "stopped and cleaned up"))

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


def _tls(rec: ServiceRecord) -> bool:
    """Whether the serving generation of `rec` serves HTTPS."""
    return rec.manifest is not None and rec.manifest.tls.enabled
