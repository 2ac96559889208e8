"""Level-triggered reconciler: desired state (the hub's manifests) vs actual state (runtimes), per service.

Every pass compares the last applied DesiredState with what runs (agent/plan.py) and starts one
task per service that needs work (agent/rollout.py carries it out); a pass runs on every
DesiredState, when a task ends, when a runtime exits, after an agent restart and on a resync
timer, and is idempotent: a pass with nothing to do does nothing.

Ports: with a manifest port of 0 the new generation gets a free port and the old one keeps
serving until the new one is healthy (zero downtime, the scoring URI moves). When both
generations want the same fixed port, the old one is stopped first and restarted on rollback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from agent import timers
from agent.cache import ArtifactCache
from agent.environments import EnvironmentCache
from agent.manifests import service_status
from agent.plan import Action, plan
from agent.rollout import DEFAULT_HEALTH_TIMEOUT_S, DEFAULT_PULL_RETRY_WINDOW_S, Report, ServiceWork
from agent.state import AgentState
from agent.supervisor import RuntimeProcess, Supervisor
from protos.edgeport.v1 import agent_pb2

__all__ = ["DEFAULT_HEALTH_TIMEOUT_S", "DEFAULT_PULL_RETRY_WINDOW_S", "Action", "Reconciler", "plan"]

SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# A pass runs whenever something may need work: a new desired state, a task ending, a runtime exiting (watched
# through a pidfd, see Supervisor.watch_exit), a pull's backoff running out. The timer is only the safety net
# of a level-triggered loop; where exits cannot be watched it is what notices them, so it is short there.
RESYNC_S = 30.0
POLL_S = 2.0


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
        identity_dir: Path | None = None,
    ) -> None:
        self.state = state
        self.report = report
        self._wake = asyncio.Event()
        self.work = ServiceWork(state, cache, envs, supervisor, report, self._wake.set, services_dir=services_dir,
                                default_registry=default_registry, host=host, advertise_host=advertise_host,
                                pull_retry_window_s=pull_retry_window_s, identity_dir=identity_dir)  # fmt: skip
        self.tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def procs(self) -> dict[str, RuntimeProcess]:
        """The runtimes serving now, by service."""
        return self.work.procs

    @property
    def supervisor(self) -> Supervisor:
        """The one place that starts this agent's runtimes."""
        return self.work.supervisor

    @property
    def retry_at(self) -> dict[str, float]:
        """Service -> monotonic time before which a failed pull is not retried."""
        return self.work.retry_at

    # ---- entry points ----

    def resume(self) -> None:
        """After an agent start: adopt runtimes that still run; kill half-started ones an earlier agent left."""
        self.work.resume()

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
                self.report(service_status(m, m.name, agent_pb2.FAILED, message))
        stored = self.state.save_desired(desired)
        for name in self.work.tls_waiting:  # it may bring their certificates: look now, not after the retry delay
            self.retry_at.pop(name, None)
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
            tick = timers.call_later(loop, POLL_S if self.work.polling else RESYNC_S, self._wake.set)
            await self._wake.wait()
            tick.cancel()
            self._wake.clear()

    def reconcile_once(self) -> list[Action]:
        """One level-triggered pass: start a task for each service that needs work and has none running."""
        actions = plan(self.state.desired().services, self.state.service_rows(), self.work.running)
        started = []
        for action in actions:
            if action.service in self.tasks:
                continue  # busy; the pass after the task ends looks again
            if action.kind == "deploy" and self.retry_at.get(action.service, 0.0) > time.monotonic():
                continue  # a pull failed for a passing reason: wait out its backoff
            coro: Coroutine[Any, Any, None]
            if action.kind == "deploy":
                coro = self.work.deploy(action.manifest)  # type: ignore[arg-type]
            elif action.kind == "restart":
                coro = self.work.restart(action.service)
            else:
                coro = self.work.remove(action.service)
            task = asyncio.get_running_loop().create_task(coro, name=f"{action.kind}:{action.service}")
            self.tasks[action.service] = task
            task.add_done_callback(functools.partial(self._task_done, action.service))
            started.append(action)
        return started

    async def stop_all(self) -> None:
        """Cancel tasks and exit watches (runtimes keep running: a restarted agent adopts them)."""
        self.work.stop_watches()
        for task in list(self.tasks.values()):
            task.cancel()
        for task in list(self.tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def stop_runtimes(self) -> list[str]:
        """Stop every runtime on purpose (agent shutdown); the next agent starts them again without backoff.

        Blocking (run it in a thread), after `stop_all`, which ends the exit watches on the loop."""
        return self.work.stop_runtimes()

    def reports(self) -> list[agent_pb2.ServiceReport]:
        """What runs now, for Hello."""
        return [
            agent_pb2.ServiceReport(
                service=r.name, generation=r.generation, phase=r.phase,
                scoring_uri=self.work.uri(r.port, tls=bool(r.manifest and r.manifest.tls.enabled)) if r.port else "",
            )
            for r in self.state.services().values()
        ]  # fmt: skip

    def _task_done(self, name: str, task: asyncio.Task[None]) -> None:
        self.tasks.pop(name, None)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            rec = self.state.service(name)
            message = f"agent error: {exc!r}"
            self.report(service_status(rec.manifest if rec else None, name, agent_pb2.FAILED, message))
        self._wake.set()
