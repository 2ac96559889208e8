"""The Supervisor: starts, health-checks, adopts and stops runtime processes; and the restart backoff.

Each runtime runs as `python -m runtimes serve ...` in its own session (process group = its PID), with
stdout+stderr appended to `logs/<service>.<generation>.log`, so a stop signals the whole group and nothing is
left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from agent.supervisor.health import check_healthy, port_in_use, probe_healthy
from agent.supervisor.process import RuntimeProcess, RuntimeSpec, process_start_time, watch_exit
from agent.supervisor.runtime_log import START_MARKER, failure, tail
from agent.supervisor.runtime_user import RuntimeUser, command_as_user

HEALTH_POLL_S = 0.2
LOG_ROTATE_BYTES = 5 * 1024 * 1024


class RuntimeUnhealthy(Exception):
    """A runtime did not become healthy; `log_tail` holds its last log lines."""

    def __init__(self, reason: str, log_tail: list[str]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_tail = log_tail


def _unhealthy(what: str, log_path: Path) -> RuntimeUnhealthy:
    """RuntimeUnhealthy whose reason names the runtime's own error line, with the log's last lines."""
    lines = tail(log_path, 200)  # a deep traceback still ends within these
    return RuntimeUnhealthy(failure(what, lines), lines[-30:])


class Supervisor:
    """Starts, health-checks, adopts and stops runtime processes."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir).resolve()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.runtime_user: RuntimeUser | None = None  # None: runtimes run as the agent's own user

    def _hand_over(self, spec: RuntimeSpec) -> None:
        """Give the runtime user its service's folders (to write in) and its TLS files; nothing else.

        Folders only: files in them are hardlinks of the agent's cache (0444, owned by the agent), which the
        runtime reads but must not change. The tls folder's key and certificate are the runtime's own."""
        user = self.runtime_user
        if user is None or spec.service_dir is None:
            return
        service_dir = spec.service_dir
        os.chown(service_dir, user.uid, user.gid)
        for folder in (spec.model_dir.parent, spec.model_dir, spec.source_dir):
            if folder is None or not folder.is_dir() or not folder.is_relative_to(service_dir):
                continue
            os.chown(folder, user.uid, user.gid)
            for root, dirs, _files in os.walk(folder):
                for d in dirs:
                    os.chown(os.path.join(root, d), user.uid, user.gid)
        for path in (spec.tls_cert, spec.tls_key):
            if path is not None and path.is_relative_to(service_dir):
                os.chown(path.parent, user.uid, user.gid)
                os.chown(path, user.uid, user.gid)

    def log_path(self, service: str, generation: int) -> Path:
        """Where a generation's runtime output goes."""
        return self.log_dir / f"{service}.{generation}.log"

    def start(self, spec: RuntimeSpec) -> RuntimeProcess:
        """Start the runtime for `spec` in its own process group; raise RuntimeUnhealthy when its port is taken."""
        log_path = self.log_path(spec.service, spec.generation)
        if port_in_use(spec.port, spec.host):
            raise RuntimeUnhealthy(f"port {spec.port} is already in use on {spec.host}", tail(log_path))
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "AZUREML_MODEL_DIR": str(spec.model_dir),
            **spec.environment,
            **spec.secrets,
        }
        user = self.runtime_user
        if user is not None:
            self._hand_over(spec)
            home = str(spec.service_dir or spec.model_dir)  # not the agent's home: caches land in its own folder
            env.update({"HOME": home, "USER": user.name, "LOGNAME": user.name})
        cwd = spec.source_dir or spec.model_dir
        with contextlib.suppress(FileNotFoundError):
            if log_path.stat().st_size > LOG_ROTATE_BYTES:  # keep one previous log; restarts append, never grow forever
                os.replace(log_path, log_path.with_suffix(".log.1"))
        with open(log_path, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {START_MARKER} {spec.generation}\n".encode())
            log.flush()
            # The log stays the agent's file, which the runtime writes through the descriptor it inherits.
            popen = subprocess.Popen(
                command_as_user(spec, user), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=cwd, start_new_session=True,
            )  # fmt: skip
        return RuntimeProcess(spec, popen.pid, process_start_time(popen.pid), log_path, popen)

    async def wait_healthy(self, proc: RuntimeProcess, timeout_s: float) -> None:
        """Return once GET / answers 200; raise RuntimeUnhealthy when it exits or `timeout_s` passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            code = proc.exit_code()
            if code is not None:
                raise _unhealthy(f"runtime exited with code {code} during start", proc.log_path)
            # A 200 while our process is gone came from someone else on the port: not ours.
            if await probe_healthy(proc.spec.port, proc.spec.host, 1.0, tls=proc.spec.tls_cert is not None) and (
                proc.alive()
            ):
                return
            if time.monotonic() >= deadline:
                raise _unhealthy(f"runtime not healthy within {timeout_s:g}s", proc.log_path)
            await asyncio.sleep(HEALTH_POLL_S)

    def watch_exit(self, proc: RuntimeProcess, on_exit: Callable[[], object]) -> Callable[[], None] | None:
        """`watch_exit` for a runtime this supervisor started or adopted (None: cannot watch, poll instead)."""
        return watch_exit(proc.pid, proc.pid_start, on_exit)

    def adopt(self, spec: RuntimeSpec, pid: int, pid_start: int) -> RuntimeProcess | None:
        """Take over a runtime an earlier agent started, if that very process still runs and is healthy."""
        if pid <= 0 or process_start_time(pid) != pid_start:
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        if b"runtimes" not in cmdline or b"serve" not in cmdline:
            return None
        if not check_healthy(spec.port, spec.host, tls=spec.tls_cert is not None):
            return None
        return RuntimeProcess(spec, pid, pid_start, self.log_path(spec.service, spec.generation))

    def stop(self, proc: RuntimeProcess, grace_s: float = 5.0) -> None:
        """TERM the runtime's process group, KILL it after `grace_s`; reap it. Idempotent."""
        if proc.pid <= 0:
            return
        if proc.popen is None and (proc.pid_start == 0 or process_start_time(proc.pid) != proc.pid_start):
            return  # adopted and already gone (or the PID now belongs to someone else): never signal a stranger
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while proc.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # also whatever the runtime started itself
        if proc.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(5)
        else:
            deadline = time.monotonic() + 5
            while proc.alive() and time.monotonic() < deadline:
                time.sleep(0.05)


class Backoff:
    """Restart delays 1, 2, 4 ... `cap` seconds; back to 1 s after `stable_s` of healthy running."""

    def __init__(self, first_s: float = 1.0, cap_s: float = 30.0, stable_s: float = 60.0) -> None:
        self.first_s, self.cap_s, self.stable_s = first_s, cap_s, stable_s
        self.attempts = 0
        self.healthy_since: float | None = None

    def next_delay(self) -> float:
        """The delay before the next restart (grows with every call)."""
        if self.healthy_since is not None and time.monotonic() - self.healthy_since >= self.stable_s:
            self.attempts = 0
        self.healthy_since = None
        delay = min(self.cap_s, self.first_s * 2**self.attempts)
        self.attempts += 1
        return delay

    def healthy(self) -> None:
        """The runtime is healthy again (starts the stability clock)."""
        self.healthy_since = time.monotonic()
