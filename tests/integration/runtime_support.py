"""Start a real `python -m runtimes serve` subprocess for the runtime room's integration tests."""

from __future__ import annotations

import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support import PYTHON, REPO, Processes, free_port

EXAMPLES = REPO / "runtimes" / "examples"
SCRIPTS = REPO / "tests" / "fixtures" / "entry_scripts"


@dataclass
class Runtime:
    """A started runtime: its process and addresses."""

    proc: subprocess.Popen[bytes]
    port: int
    grpc_port: int
    processes: Processes
    cafile: Path | None = None  # set when the runtime serves HTTPS with a certificate this file trusts

    @property
    def url(self) -> str:
        """Base URL (https:// when started with a CA file)."""
        return f"{'https' if self.cafile else 'http'}://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        """Everything the runtime printed so far."""
        return self.processes.log(self.proc)


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    cafile: Path | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request with urllib; returns (status, lower-case headers, body) for any status.

    `cafile`: the certificate(s) to trust for an https:// URL.
    """
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def start_runtime(
    processes: Processes,
    *args: str,
    env: dict[str, str] | None = None,
    ready: bool = True,
    name: str = "runtime",
    cafile: Path | None = None,
) -> Runtime:
    """Start the runtime with `args` on free ports; wait for `GET /` to say Healthy (unless ready=False).

    `cafile`: the runtime serves HTTPS (--tls-cert in `args`) with a certificate this file trusts.
    """
    port, grpc_port = free_port(), free_port()
    proc = processes.start(
        [PYTHON, "-m", "runtimes", "serve", "--port", str(port), "--grpc-port", str(grpc_port), *args],
        name=f"{name}-{port}",
        env=env,
        cwd=REPO,
    )
    rt = Runtime(proc, port, grpc_port, processes, cafile)
    if ready:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:  # fail at once with the log, not after the timeout
                raise AssertionError(f"runtime exited with {proc.returncode}:\n{rt.log}")
            try:
                if http("GET", rt.url + "/", cafile=cafile)[0] == 200:
                    break
            except OSError:  # not listening yet
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"runtime on {port} not healthy after 60 s:\n{rt.log}")
            time.sleep(0.05)
    return rt


def model_dir_of(model: Path) -> Path:
    """The folder a fixture model lives in."""
    return model.parent
