"""The only place on the agent that starts processes: runtimes, and short tool commands.

Each runtime runs as `python -m runtimes serve ...` in its own session (process group =
its PID), with stdout+stderr appended to `logs/<service>.<generation>.log`, so a stop
signals the whole group and nothing is left behind. An agent running as root starts runtimes (entry
scripts are user code) as an unprivileged user (`RuntimeUser`), for whom only the service's folder
is writable. A runtime is known by PID plus the
kernel's start time of that PID, so an agent restarted after `kill -9` can adopt runtimes
that still run (and tell them apart from a reused PID) instead of restarting them.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HEALTH_POLL_S = 0.2
LOG_ROTATE_BYTES = 5 * 1024 * 1024
START_MARKER = "agent starts generation"  # in the line the supervisor writes to the log before each start
# The last line of a Python traceback: `RuntimeError: calibration table missing`, `json.decoder.JSONDecodeError: ...`.
_EXCEPTION_LINE = re.compile(
    r"(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Failure|Fault)(?::\s.*)?"
)
ERROR_LINE_CHARS = 300
DEFAULT_RUNTIME_USER = "edgeport-runtime"  # made (a system user) by an agent running as root when it is missing


class RuntimeUserError(Exception):
    """The runtime user cannot be had (exit 2 at agent start: runtimes are never silently run as root)."""


@dataclass(frozen=True)
class RuntimeUser:
    """The unprivileged account runtimes run as."""

    name: str
    uid: int
    gid: int


def resolve_runtime_user(name: str | None) -> RuntimeUser | None:
    """Who runtimes run as: None for the agent's own user.

    `name` None: the agent's own user. As root, "" means the default user (made with useradd when it is
    missing), "root" means root on purpose, any other name that existing user. Not root: "", "root" (do not
    switch) and the agent's own user make sense (a process cannot switch user without privilege).
    RuntimeUserError: say why.
    """
    if name is None:
        return None
    if os.geteuid() != 0:
        own = pwd.getpwuid(os.geteuid()).pw_name
        if name not in ("", "root", own):
            raise RuntimeUserError(f"--runtime-user {name}: only an agent running as root can run runtimes as "
                                   f"another user (this agent runs as {own})")  # fmt: skip
        return None
    if name == "root":
        return None  # asked for explicitly
    wanted = name or DEFAULT_RUNTIME_USER
    try:
        entry = pwd.getpwnam(wanted)
    except KeyError:
        if name:
            raise RuntimeUserError(f"--runtime-user {name}: no such user on this device") from None
        entry = _create_user(wanted)
    if entry.pw_uid == 0:
        return None  # another name for root, given on purpose
    user = RuntimeUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
    _check_reachable(user)
    return user


def _check_reachable(user: RuntimeUser) -> None:
    """RuntimeUserError unless `user` can start this interpreter (runtimes run on it, or on venvs made from it):
    said once at agent start, not as a failed start of every deploy."""
    args = [sys.executable, "-I", "-c", _DROP_PRIVILEGES, str(user.uid), str(user.gid), sys.executable, "-c", "1"]
    try:
        done = run_command(args, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeUserError(f"cannot check what the runtime user {user.name} may run: {exc}") from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"it exited with code {done.returncode}"])[-1]
        raise RuntimeUserError(
            f"runtimes would run as {user.name}, but {why.removeprefix('error: ')}; let that user reach the "
            f"interpreter, give --runtime-user NAME for one that can, or --runtime-user root"
        )


# Drops to the runtime user, then becomes the runtime (same PID). Popen's own user=/group= would make it fork
# instead of vfork, and a fork of an agent whose gRPC threads run aborts in gRPC's fork handler (SIGABRT).
_DROP_PRIVILEGES = """\
import os, sys
os.setgroups([]); os.setgid(int(sys.argv[2])); os.setuid(int(sys.argv[1]))
try:
    os.execv(sys.argv[3], sys.argv[3:])
except OSError as exc:
    print(f"error: the runtime user (uid {sys.argv[1]}) cannot run {sys.argv[3]}: {exc.strerror} "
          "(it needs search permission on every folder above it)", file=sys.stderr)
    sys.exit(1)
"""


def _as_user(spec: RuntimeSpec, user: RuntimeUser | None) -> list[str]:
    """The command that starts `spec`'s runtime as `user` (None: as the agent's own user)."""
    argv = spec.argv()
    if user is None:
        return argv
    return [spec.python, "-I", "-c", _DROP_PRIVILEGES, str(user.uid), str(user.gid), *argv]


def _create_user(name: str) -> pwd.struct_passwd:
    """Make the default runtime user (a system account without a login shell or home)."""
    useradd = shutil.which("useradd") or shutil.which("adduser")
    why = "no useradd on this device"
    if useradd is not None:
        args = [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
        if Path(useradd).name == "adduser":  # busybox: adduser -S -D -H -s SHELL NAME
            args = [useradd, "-S", "-D", "-H", "-s", "/sbin/nologin", name]
        try:
            done = run_command(args, timeout=30)
            said = (done.stderr or done.stdout).strip().splitlines()
            why = (said[-1] if said else f"exit code {done.returncode}") if done.returncode else ""
        except (OSError, subprocess.SubprocessError) as exc:
            why = str(exc)
        if not why:
            try:
                return pwd.getpwnam(name)
            except KeyError:
                why = f"{Path(useradd).name} ran but {name} does not exist"
    raise RuntimeUserError(
        f"the agent runs as root and could not create the user {name} to run runtimes as ({why}); runtimes run "
        f"user code, so they do not run as root: create a user and give --runtime-user NAME, or give "
        f"--runtime-user root to run them as root anyway"
    )


class RuntimeUnhealthy(Exception):
    """A runtime did not become healthy; `log_tail` holds its last log lines."""

    def __init__(self, reason: str, log_tail: list[str]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_tail = log_tail


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


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something already listens on `port` (connections in TIME_WAIT do not count, as for servers)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def local_tls_context() -> ssl.SSLContext:
    """TLS for the agent's own calls to a runtime it started on this machine (health, metrics, profiling): the
    point is whether it answers, not who it is (the agent gave it its certificate), so nothing is verified."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def check_healthy(port: int, host: str = "127.0.0.1", timeout: float = 2.0, *, tls: bool = False) -> bool:
    """GET / on the runtime answers 200 (the runtime contract's 'Healthy'); `tls`: over HTTPS."""
    target = host if host != "0.0.0.0" else "127.0.0.1"
    conn = (
        http.client.HTTPSConnection(target, port, timeout=timeout, context=local_tls_context())
        if tls
        else http.client.HTTPConnection(target, port, timeout=timeout)
    )
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read(200)
        return resp.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


async def probe_healthy(port: int, host: str = "127.0.0.1", timeout: float = 2.0, *, tls: bool = False) -> bool:
    """check_healthy on the event loop (no worker thread: those may all be busy pulling blobs)."""
    target = host if host != "0.0.0.0" else "127.0.0.1"
    writer = None
    try:
        context = local_tls_context() if tls else None
        reader, writer = await asyncio.wait_for(asyncio.open_connection(target, port, ssl=context), timeout)
        writer.write(f"GET / HTTP/1.1\r\nHost: {target}:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        parts = status_line.split()
        return len(parts) >= 2 and parts[1] == b"200"
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()


def error_line(log_lines: list[str]) -> str:
    """The runtime's own account of why it failed: the last exception line of its latest start
    (`RuntimeError: calibration table missing`), else its last `error: ...` line; "" when it gave none."""
    since_start = log_lines
    for i in range(len(log_lines) - 1, -1, -1):
        if log_lines[i].startswith("---") and START_MARKER in log_lines[i]:
            since_start = log_lines[i + 1 :]
            break
    found = ""
    for line in reversed(since_start):
        text = line.strip()
        if _EXCEPTION_LINE.fullmatch(text):
            found = text
            break
        if not found and text.startswith("error: "):
            found = text.removeprefix("error: ")
    return found[:ERROR_LINE_CHARS]


def failure(what: str, log_lines: list[str]) -> str:
    """`what` went wrong, followed by the runtime's own error line when its log has one."""
    line = error_line(log_lines)
    return f"{what}: {line}" if line else what


def tail(path: Path, lines: int = 30) -> list[str]:
    """The last `lines` lines of a log file ([] when there is none)."""
    try:
        with open(path, errors="replace") as fh:
            return [line.rstrip("\n") for line in deque(fh, maxlen=lines)]
    except OSError:
        return []


def run_command(
    args: list[str], *, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a short tool command (pip, provider probe) to completion; output captured as text."""
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, check=False
    )


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
                _as_user(spec, user), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                start_new_session=True,
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


PYTHON = sys.executable
