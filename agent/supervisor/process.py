"""Runtime processes as the supervisor knows them, and short tool commands.

A runtime is described by a `RuntimeSpec` (its command line is the runtime process contract) and known, once
started, by PID plus the kernel's start time of that PID (`RuntimeProcess`): so an agent restarted after
`kill -9` can adopt runtimes that still run, and tell them apart from a reused PID. `watch_exit` notices a
runtime's end without polling; `run_command` runs the short tools (pip, provider probes) the agent needs.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PYTHON = sys.executable  # the agent's own interpreter: runtimes run on it, or on venvs made from it


@dataclass
class RuntimeSpec:
    """Everything needed to start one generation of one service's runtime."""

    service: str
    generation: int
    python: str
    model_dir: Path
    port: int
    grpc_port: int
    host: str = "127.0.0.1"
    source_dir: Path | None = None
    entry_script: str = ""
    onnx_file: str = ""
    auth_mode: str = "none"
    secrets: dict[str, str] = field(default_factory=dict)  # EDGEPORT_* keys: environment, never argv
    cpus: float = 0.0
    execution_providers: list[str] = field(default_factory=list)
    quantize_int8: bool = False
    max_batch_size: int = 0
    max_batch_delay_ms: int = 0
    max_body_bytes: int = 0
    environment: dict[str, str] = field(default_factory=dict)
    tls_cert: Path | None = None  # HTTPS on the port (and TLS on gRPC) with these PEM files
    tls_key: Path | None = None
    service_dir: Path | None = None  # the service's folder: the only place its runtime may write

    @property
    def scheme(self) -> str:
        """http, or https when the runtime serves TLS."""
        return "https" if self.tls_cert is not None else "http"

    def argv(self) -> list[str]:
        """The runtime command line (the runtime process contract)."""
        args = [self.python, "-m", "runtimes", "serve", "--model-dir", str(self.model_dir), "--name", self.service]
        if self.entry_script:
            args += ["--entry-script", self.entry_script, "--source-dir", str(self.source_dir or self.model_dir)]
        elif self.onnx_file:
            args += ["--onnx", self.onnx_file]
        args += ["--host", self.host, "--port", str(self.port), "--grpc-port", str(self.grpc_port)]
        args += ["--auth", self.auth_mode or "none"]
        if self.max_batch_size > 1:
            args += ["--max-batch-size", str(self.max_batch_size), "--max-batch-delay-ms", str(self.max_batch_delay_ms)]
        if self.cpus > 0:
            args += ["--cpus", f"{self.cpus:g}"]
        if self.execution_providers:
            args += ["--execution-providers", ",".join(self.execution_providers)]
        if self.quantize_int8:
            args.append("--quantize-int8")
        if self.max_body_bytes > 0:
            args += ["--max-body-bytes", str(self.max_body_bytes)]
        if self.tls_cert is not None and self.tls_key is not None:
            args += ["--tls-cert", str(self.tls_cert), "--tls-key", str(self.tls_key)]
        return args


@dataclass
class RuntimeProcess:
    """A started (or adopted) runtime."""

    spec: RuntimeSpec
    pid: int
    pid_start: int
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None  # None when adopted from an earlier agent

    def exit_code(self) -> int | None:
        """The exit status once it ended (-1 when adopted and gone), None while it runs."""
        if self.popen is not None:
            return self.popen.poll()
        return None if process_start_time(self.pid) == self.pid_start else -1

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.exit_code() is None


def process_start_time(pid: int) -> int:
    """The kernel start time (clock ticks since boot) of `pid`, 0 when there is no such live process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    if fields[0] in ("Z", "X"):  # zombie / dead: not running
        return 0
    return int(fields[19])


def watch_exit(pid: int, pid_start: int, on_exit: Callable[[], object]) -> Callable[[], None] | None:
    """Call `on_exit` on the running event loop once process `pid` (started at `pid_start`) has ended.

    A pidfd (Linux 5.3+) turns readable when its process ends, so a watched runtime costs nothing until
    then. Returns a function that stops the watch, or None where no pidfd can be had (other systems, old
    kernels, no permission): the caller must then poll. A process already gone calls back at once.
    """
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        loop.call_soon(on_exit)
        return lambda: None
    except (AttributeError, OSError):
        return None
    if process_start_time(pid) != pid_start:  # the PID was reused after our process ended
        os.close(fd)
        loop.call_soon(on_exit)
        return lambda: None
    watching = True

    def stop() -> None:
        nonlocal watching
        if watching:
            watching = False
            loop.remove_reader(fd)
            os.close(fd)

    def ended() -> None:
        stop()
        on_exit()

    loop.add_reader(fd, ended)
    return stop


def run_command(
    args: list[str], *, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a short tool command (pip, provider probe) to completion; output captured as text."""
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, check=False
    )
