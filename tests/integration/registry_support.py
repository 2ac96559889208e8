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

# The first admin token of every hub these tests started, by API base URL: the helpers below send it,
# so a test says which hub it talks to and the token follows.
HUB_TOKENS: dict[str, str] = {}


def remember_hub(url: str, data_dir: Path) -> str:
    """Read the admin token a new hub wrote to DATA_DIR/admin.token and keep it for `url`; the token."""
    token = (Path(data_dir) / "admin.token").read_text().strip()
    HUB_TOKENS[url.rstrip("/")] = token
    return token


def hub_token(url: str) -> str:
    """The admin token of the hub at `url` (started by these helpers)."""
    return HUB_TOKENS[url.rstrip("/")]


def auth(url: str) -> dict[str, str]:
    """`Authorization` header with the admin token of the hub at `url` (for httpx/urllib calls)."""
    return {"Authorization": f"Bearer {hub_token(url)}"}


def api_request(url: str, path: str, *, method: str = "GET", data: bytes | None = None,
                headers: dict[str, str] | None = None) -> urllib.request.Request:
    """A urllib request to the hub at `url` carrying its admin token."""
    return urllib.request.Request(f"{url}{path}", data=data, method=method, headers={**auth(url), **(headers or {})})


def api_get(url: str, path: str, timeout: float = 10) -> Any:
    """GET an API path of the hub at `url` with its admin token; the JSON answer."""
    with urllib.request.urlopen(api_request(url, path), timeout=timeout) as r:
        return json.loads(r.read())


def cli_env(url: str | None = None) -> dict[str, str]:
    """The environment for a `hub` CLI subprocess: the admin token of the hub at `url`, no user config."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "EDGEPORT_CONFIG": str(REPO / ".edgeport-test-no-config.json")}
    env.pop("EDGEPORT_HUB", None)
    env.pop("EDGEPORT_TOKEN", None)
    if url is not None and url.rstrip("/") in HUB_TOKENS:
        env["EDGEPORT_TOKEN"] = hub_token(url)
    return env


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

    @property
    def token(self) -> str:
        """The hub's first admin token."""
        return hub_token(self.url)


def start_hub(
    processes: Processes, data_dir: Path, *, name: str = "hub", prefix: list[str] | None = None
) -> RunningHub:
    """Start `python -m hub serve`, wait until it answers `GET /api/v1/health`, keep its admin token."""
    port = free_port()
    # --grpc-port 0: the agent channel takes any free port, never the shared default 7071
    args = [*(prefix or []), PYTHON, "-m", "hub", "serve", "--data-dir", str(data_dir), "--port", str(port)]
    args += ["--grpc-port", "0"]
    proc = processes.start(args, name=name, cwd=REPO)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, f"hub exited early:\n{processes.log(proc)}"
        with urllib.request.urlopen(f"{url}/api/v1/health", timeout=2) as r:
            return r.status == 200

    wait_for(ready, timeout=30, what=f"hub on {url}")
    remember_hub(url, data_dir)
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


def hub_cli(
    url: str, *args: str, prefix: list[str] | None = None, cwd: Path | None = None, token: str | None = None
) -> CliResult:
    """Run `python -m hub --hub URL ARGS...` and capture everything.

    The CLI gets `token`, else the admin token of the hub at `url` when these helpers started it.
    """
    env = cli_env(url)
    if token is not None:
        env["EDGEPORT_TOKEN"] = token
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
    return api_get(url, "/api/v1/models")


def assert_one_line_error(result: CliResult, code: int, *needles: str) -> None:
    """The command failed with `code`, one `error: ...` line on stderr naming every needle, no traceback."""
    assert result.code == code, (result.code, result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: "), result.err
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
