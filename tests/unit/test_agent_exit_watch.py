"""A runtime's exit as an event (pidfd), not something the reconciler has to poll for."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.supervisor import RuntimeProcess, RuntimeSpec, process_start_time, watch_exit
from simulators.shared_runtime import SharedRuntimeSupervisor

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs Linux pidfds")


def _sleeper(seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])


async def _called_within(event: asyncio.Event, timeout: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


def test_exit_calls_back_and_a_stopped_watch_does_not() -> None:
    async def scenario() -> None:
        ends, kept = _sleeper(0.2), _sleeper(0.2)
        ended, not_wanted = asyncio.Event(), asyncio.Event()
        assert watch_exit(ends.pid, process_start_time(ends.pid), ended.set) is not None
        stop = watch_exit(kept.pid, process_start_time(kept.pid), not_wanted.set)
        assert stop is not None
        stop()
        assert await _called_within(ended, 10)
        kept.wait(10)
        assert not await _called_within(not_wanted, 0.3)
        ends.wait(10)

    asyncio.run(scenario())


def test_gone_or_reused_pid_calls_back_at_once() -> None:
    async def scenario() -> None:
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait(10)
        called = asyncio.Event()
        watch_exit(gone.pid, 12345, called.set)
        assert await _called_within(called, 1)
        # Our own PID with another start time: the process that had it is gone, whoever has the PID now.
        reused = asyncio.Event()
        watch_exit(os.getpid(), process_start_time(os.getpid()) + 1, reused.set)
        assert await _called_within(reused, 1)
        alive = asyncio.Event()
        stop = watch_exit(os.getpid(), process_start_time(os.getpid()), alive.set)
        assert not await _called_within(alive, 0.2)
        assert stop is not None
        stop()

    asyncio.run(scenario())


def test_agents_sharing_a_runtime_share_one_watch(tmp_path: Path) -> None:
    async def scenario() -> None:
        popen = _sleeper(60)
        spec = RuntimeSpec(service="svc", generation=1, python="", model_dir=tmp_path, port=1, grpc_port=2)
        proc = RuntimeProcess(spec, popen.pid, process_start_time(popen.pid), tmp_path / "log", popen)
        supervisors = [SharedRuntimeSupervisor(tmp_path / f"logs{i}") for i in range(3)]
        events = [asyncio.Event() for _ in supervisors]
        fds_before = len(os.listdir("/proc/self/fd"))
        stops = [s.watch_exit(proc, e.set) for s, e in zip(supervisors, events, strict=True)]
        assert all(stop is not None for stop in stops)
        assert len(os.listdir("/proc/self/fd")) - fds_before == 1, "one pidfd for the runtime, not one per agent"
        stops[0]()  # type: ignore[misc]
        popen.kill()
        assert await _called_within(events[1], 5) and await _called_within(events[2], 5)
        assert not events[0].is_set()
        popen.wait(10)

    asyncio.run(scenario())
