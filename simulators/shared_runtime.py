"""Simulated fleets on one machine: agents of one process share one real runtime per service generation.

Starting 10,000 runtime processes cannot fit on one machine, so a fleet run with
`--shared-runtime` gives every agent in the process this supervisor: the first agent to
start a generation starts the one real runtime (`python -m runtimes serve`, one onnxruntime
session) through the real Supervisor; the others get a handle on that same process, see it
healthy once it is, and the last one to stop it stops it. Everything else each agent does
is its own (desired state, artifact pulls with digest checks, status reports). Benchmarks
say so in their output.

The figures of that one runtime are shared too (`shared_scrape`, `shared_rss`): one GET /metrics
and one /proc read per runtime every SCRAPE_TTL_S serve every agent's telemetry, instead of every
agent scraping the same process. Each agent still turns them into its own points and deltas.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent import RuntimeProcess, RuntimeSpec, RuntimeStats, Supervisor, rss_bytes, scrape

SCRAPE_TTL_S = 5.0  # well under the telemetry interval (60 s by default), so every agent's points stay recent

_lock = threading.Lock()
_procs: dict[tuple[str, int], RuntimeProcess] = {}  # (service, generation) -> the one real runtime
_refs: dict[tuple[str, int], int] = {}
_healthy: set[tuple[str, int]] = set()
_probes: dict[tuple[str, int], asyncio.Future[None]] = {}  # the one health probe per generation
_exit_watches: dict[int, tuple[Callable[[], None], set[Callable[[], object]]]] = {}  # pid -> (stop, agents' callbacks)


class SharedRuntimeSupervisor(Supervisor):
    """A Supervisor whose runtimes are shared by every agent of this process (see module docstring)."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__(log_dir)

    def start(self, spec: RuntimeSpec) -> RuntimeProcess:
        """Start the shared runtime for this service generation, or hand out the running one."""
        key = (spec.service, spec.generation)
        with _lock:
            proc = _procs.get(key)
            if proc is None or not proc.alive():
                proc = super().start(spec)
                _procs[key], _refs[key] = proc, 0
                _healthy.discard(key)
            _refs[key] += 1
            return RuntimeProcess(proc.spec, proc.pid, proc.pid_start, proc.log_path, proc.popen)

    async def wait_healthy(self, proc: RuntimeProcess, timeout_s: float) -> None:
        """Healthy once the shared runtime answered (one health probe loop per generation, not one per agent)."""
        key = (proc.spec.service, proc.spec.generation)
        if key in _healthy and proc.alive():
            return
        probe = _probes.get(key)
        if probe is None or (probe.done() and (probe.cancelled() or probe.exception() is not None)):
            probe = asyncio.ensure_future(self._first_wait(proc, timeout_s))
            _probes[key] = probe
        await asyncio.shield(probe)
        _healthy.add(key)

    async def _first_wait(self, proc: RuntimeProcess, timeout_s: float) -> None:
        started = time.monotonic()
        await super().wait_healthy(proc, timeout_s)
        # One line per shared runtime: how long its start took shows in a fleet's deploy time.
        print(f"fleet: shared runtime of {proc.spec.service} generation {proc.spec.generation} (pid {proc.pid}) "
              f"healthy {time.monotonic() - started:.1f}s after its start", flush=True)  # fmt: skip

    def watch_exit(self, proc: RuntimeProcess, on_exit: Callable[[], object]) -> Callable[[], None] | None:
        """One pidfd per shared runtime, whose exit calls back every agent watching it."""
        entry = _exit_watches.get(proc.pid)
        if entry is None:
            callbacks: set[Callable[[], object]] = set()

            def ended() -> None:
                _exit_watches.pop(proc.pid, None)
                for callback in list(callbacks):
                    callback()

            stop = super().watch_exit(proc, ended)
            if stop is None:
                return None
            entry = _exit_watches[proc.pid] = (stop, callbacks)
        entry[1].add(on_exit)

        def unwatch() -> None:
            current = _exit_watches.get(proc.pid)
            if current is None or current[1] is not entry[1]:
                return  # it ended already (or a new runtime got the PID): nothing to stop
            current[1].discard(on_exit)
            if not current[1]:
                del _exit_watches[proc.pid]
                current[0]()

        return unwatch

    def adopt(self, spec: RuntimeSpec, pid: int, pid_start: int) -> RuntimeProcess | None:
        """Never adopt: a shared runtime belongs to the fleet process that started it."""
        return None

    def stop(self, proc: RuntimeProcess, grace_s: float = 5.0) -> None:
        """Drop this agent's share; the last share stops the real process."""
        key = (proc.spec.service, proc.spec.generation)
        with _lock:
            if _procs.get(key) is None or _procs[key].pid != proc.pid:
                return
            _refs[key] -= 1
            if _refs[key] > 0:
                return
            del _procs[key], _refs[key]
            _healthy.discard(key)
            _probes.pop(key, None)
        super().stop(proc, grace_s)


_figures_lock = threading.Lock()
_scrapes: dict[int, tuple[float, RuntimeStats | None]] = {}  # port -> (when, what its /metrics said)
_rss: dict[int, tuple[float, int]] = {}  # pid -> (when, bytes)


def shared_scrape(port: int) -> RuntimeStats | None:
    """`agent.telemetry.scrape`, once per SCRAPE_TTL_S per port for the whole process (one runtime, one scrape)."""
    with _figures_lock:  # held while scraping: the agents asking meanwhile wait for this answer
        hit = _scrapes.get(port)
        if hit is not None and time.monotonic() - hit[0] < SCRAPE_TTL_S:
            return hit[1]
        stats = scrape(port)
        _scrapes[port] = (time.monotonic(), stats)
        return stats


def shared_rss(pid: int) -> int:
    """`agent.telemetry.rss_bytes` of a shared runtime, read once per SCRAPE_TTL_S per process."""
    with _figures_lock:
        hit = _rss.get(pid)
        if hit is not None and time.monotonic() - hit[0] < SCRAPE_TTL_S:
            return hit[1]
        value = rss_bytes(pid)
        _rss[pid] = (time.monotonic(), value)
        return value
