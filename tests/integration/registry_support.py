"""Helpers for the registry room's integration tests: a real `hub serve` and the `hub` CLI as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import PYTHON, REPO, Processes, free_port, wait_for


@dataclass
class RunningHub:
    """A `hub serve` subprocess on a free port."""

    url: str
    port: int
    data_dir: Path
    proc: subprocess.Popen[bytes]
    processes: Processes

    def log(self) -> str:
        """What the hub printed so far."""
        return self.processes.log(self.proc)


def start_hub(
    processes: Processes, data_dir: Path, *, name: str = "hub", prefix: list[str] | None = None
) -> RunningHub:
    """Start `python -m hub serve` and wait until it answers `GET /v2/`."""
    port = free_port()
    # --grpc-port 0: the agent channel takes any free port, never the shared default 7071
    args = [*(prefix or []), PYTHON, "-m", "hub", "serve", "--data-dir", str(data_dir), "--port", str(port)]
    args += ["--grpc-port", "0"]
    proc = processes.start(args, name=name, cwd=REPO)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, f"hub exited early:\n{processes.log(proc)}"
        with urllib.request.urlopen(f"{url}/v2/", timeout=2) as r:
            return r.status == 200

    wait_for(ready, timeout=30, what=f"hub on {url}")
    return RunningHub(url, port, data_dir, proc, processes)


@dataclass
class CliResult:
    """Exit code and output of one `hub` CLI run."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout parsed as JSON."""
        return json.loads(self.out)


def hub_cli(url: str, *args: str, prefix: list[str] | None = None, cwd: Path | None = None) -> CliResult:
    """Run `python -m hub --hub URL ARGS...` and capture everything."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("EDGEPORT_HUB", None)
    proc = subprocess.run(
        [*(prefix or []), PYTHON, "-m", "hub", "--hub", url, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or REPO,
        timeout=60,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def registry_snapshot(url: str) -> Any:
    """Everything the registry lists (straight from the API), to compare before and after a failed command."""
    with urllib.request.urlopen(f"{url}/api/v1/models", timeout=10) as r:
        return json.loads(r.read())


def assert_one_line_error(result: CliResult, code: int, *needles: str) -> None:
    """The command failed with `code`, one `error: ...` line on stderr naming every needle, no traceback."""
    assert result.code == code, (result.code, result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: "), result.err
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
