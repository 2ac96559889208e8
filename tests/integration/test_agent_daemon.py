"""`agent run` as a real process against a real `hub serve` (mutual TLS): enrollment, idle RSS, restarts, refusals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.supervisor import process_start_time
from tests.integration.registry_support import auth, cli_env, remember_hub
from tests.support import PYTHON, Processes, free_port, wait_for

IDLE_RSS_LIMIT = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real hub (mutual TLS on its gRPC port); yields its API address HOST:PORT."""
    tmp = tmp_path_factory.mktemp("agent-daemon-hub")
    procs = Processes(tmp)
    port = free_port()
    procs.start(
        [PYTHON, "-m", "hub.cli.main", "serve", "--data-dir", str(tmp / "hub"), "--port", str(port),
         "--grpc-port", str(free_port())],
        name="hub",
    )  # fmt: skip
    try:
        wait_for(lambda: _hub_up(f"127.0.0.1:{port}", tmp / "hub"), timeout=30, what="hub up")
        yield f"127.0.0.1:{port}"
    finally:
        procs.stop_all()


def _hub_up(address: str, data_dir: Path) -> bool:
    """The hub at `address` answers the CLI (with the admin token it wrote before its API answered)."""
    if not (data_dir / "admin.token").exists():
        return False
    remember_hub(f"http://{address}", data_dir)
    return _hub(address, "device", "list").returncode == 0


def _hub(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [PYTHON, "-m", "hub.cli.main", "--hub", f"http://{address}", "--output", "json", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=cli_env(f"http://{address}"))


def _token(hub: str, device: str) -> str:
    done = _hub(hub, "device", "enroll", device, "--label", "site=agent-test")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["token"]


def _agent(hub: str, data_dir: Path, *extra: str) -> list[str]:
    return [PYTHON, "-m", "agent", "run", "--hub", hub, "--data-dir", str(data_dir), "--heartbeat-s", "1", *extra]


def _rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


def test_enroll_connect_idle_rss_and_restart(tmp_path: Path, hub: str, processes: Processes) -> None:
    data = tmp_path / "dev"
    agent = processes.start(_agent(hub, data, "--token", _token(hub, "rss-dev")), name="agent")
    wait_for(lambda: "connected to hub as device rss-dev" in processes.log(agent), timeout=30, what="agent connected")
    assert "enrolled as device rss-dev" in processes.log(agent)
    assert oct((data / "identity" / "device.key").stat().st_mode & 0o777) == "0o600"
    shown = wait_for(
        lambda: (d := json.loads(_hub(hub, "device", "show", "rss-dev").stdout)).get("online") and d,
        timeout=15,
        what="hub sees the device online",
    )
    assert shown["hardware"]["cpuCount"] == os.cpu_count()  # the inventory of Hello reached the hub

    # A second agent on the same data dir is refused at once.
    second = subprocess.run(_agent(hub, data), capture_output=True, text=True, timeout=60)
    assert second.returncode == 2 and "another agent already runs with data dir" in second.stderr

    # Idle (no service): the daemon stays small.
    rss = _rss(agent.pid)
    print(f"agent idle RSS: {rss / 2**20:.1f} MiB")
    assert rss <= IDLE_RSS_LIMIT, f"idle agent RSS {rss / 2**20:.1f} MiB exceeds 50 MiB"

    # kill -9, then start again without a token: same identity, connects again.
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait(10)
    again = processes.start(_agent(hub, data), name="agent2")
    wait_for(lambda: "connected to hub as device rss-dev" in processes.log(again), timeout=30, what="reconnected")
    assert "identity: device rss-dev" in processes.log(again)

    # Revoked on the hub: the agent is refused and exits 1 with a clear line, no traceback.
    assert _hub(hub, "device", "revoke", "rss-dev").returncode == 0
    assert again.wait(30) == 1
    log = processes.log(again)
    assert "error: the hub refused this device" in log and "Traceback" not in log


def test_bad_tokens_are_refused_clearly(tmp_path: Path, hub: str) -> None:
    def run(*extra: str, data: str = "d") -> subprocess.CompletedProcess[str]:
        return subprocess.run(_agent(hub, tmp_path / data, *extra), capture_output=True, text=True, timeout=60)

    malformed = run("--token", "not-a-token")
    assert malformed.returncode == 2 and "--token: not an Edgeport enrollment token" in malformed.stderr

    no_token = run(data="empty")
    assert no_token.returncode == 2 and "give --token to enroll" in no_token.stderr

    token = _token(hub, "reuse-dev")
    first = subprocess.Popen(_agent(hub, tmp_path / "first", "--token", token), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    try:
        line = first.stdout.readline()  # type: ignore[union-attr]
        assert "enrolled as device reuse-dev" in line
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.wait(15)
    reused = run("--token", token, data="second")
    assert reused.returncode == 2 and "already used" in reused.stderr and "Traceback" not in reused.stderr

    # A token whose CA pin is not this hub's CA: the agent refuses to trust the hub.
    parts = _token(hub, "pin-dev").split(".")
    wrong_pin = ".".join([*parts[:3], "0" * 64])
    pinned = run("--token", wrong_pin, data="pinned")
    assert pinned.returncode == 1 and "refusing to trust it" in pinned.stderr
    assert not (tmp_path / "pinned" / "identity" / "device.key").exists()


def _status(data: Path) -> dict:
    done = subprocess.run([PYTHON, "-m", "agent", "status", "--data-dir", str(data)], capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_outage_store_and_forward(tmp_path: Path, processes: Processes) -> None:
    """Telemetry made while the hub is down waits in the outbox and reaches the hub, acked, once it is back."""
    port, grpc_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    hub_args = [PYTHON, "-m", "hub.cli.main", "serve", "--data-dir", str(tmp_path / "hub"), "--port", str(port),
                "--grpc-port", str(grpc_port)]  # fmt: skip
    hub = processes.start(hub_args, name="hub")
    wait_for(lambda: _hub_up(address, tmp_path / "hub"), timeout=30, what="hub up")
    data = tmp_path / "dev"
    agent = processes.start(
        _agent(address, data, "--token", _token(address, "sf-dev"), "--telemetry-s", "1", "--label", "rack=r1"),
        name="agent",
    )
    wait_for(lambda: "connected to hub" in processes.log(agent), timeout=30, what="agent connected")

    processes.stop(hub)
    wait_for(lambda: "disconnected from hub" in processes.log(agent), timeout=15, what="agent sees the outage")
    outage_start_ms = int(time.time() * 1000)
    # Some may be waiting already: the hub acks a little after it stores (see GroupCommit's ack delay).
    before = _status(data)["outbox"]["messages"]
    queued = wait_for(lambda: (n := _status(data)["outbox"]["messages"]) >= before + 3 and n, timeout=15,
                      what="queued")  # fmt: skip
    assert queued >= before + 3
    outage_end_ms = int(time.time() * 1000)

    processes.start(hub_args, name="hub2")
    wait_for(lambda: processes.log(agent).count("connected to hub") >= 2, timeout=45, what="agent reconnected")
    wait_for(lambda: _status(data)["outbox"]["messages"] <= 1, timeout=15, what="outbox acked and trimmed")

    query = f"http://{address}/api/v1/telemetry?device=sf-dev&metric=agent.rss_bytes&limit=500"
    with urllib.request.urlopen(urllib.request.Request(query, headers=auth(f"http://{address}")), timeout=15) as resp:
        points = json.loads(resp.read())
    during = [p for p in points if outage_start_ms <= p["at_ms"] <= outage_end_ms]
    assert during, f"no telemetry from the outage window reached the hub: {points[:3]}"
    assert during[0]["labels"] == {"rack": "r1"}  # --label travels with the agent's points
    assert agent.poll() is None


def test_kill9_agent_adopts_its_running_service(
    tmp_path: Path, hub: str, processes: Processes, digits_model: Path
) -> None:
    """A deployed service survives `kill -9` of its agent; the restarted agent adopts it (same PID), and a clean stop
    of the agent stops it."""
    done = _hub(hub, "model", "register", "-n", "adopt-digits", "-p", str(digits_model))
    assert done.returncode == 0, done.stderr
    data = tmp_path / "dev"
    # A relative --data-dir: runtimes run in other folders, so the agent must hand them absolute paths.
    agent = processes.start(_agent(hub, Path("dev"), "--token", _token(hub, "adopt-dev")), name="agent", cwd=tmp_path)
    wait_for(lambda: "connected to hub" in processes.log(agent), timeout=30, what="agent connected")
    done = _hub(hub, "deploy", "-n", "adopt-svc", "-m", "adopt-digits:1", "--target", "adopt-dev", "--timeout", "60")
    assert done.returncode == 0, done.stdout + done.stderr
    service = _status(data)["services"][0]
    assert service["phase"] == "HEALTHY" and service["pid"] > 0
    runtime_pid = service["pid"]

    os.kill(agent.pid, signal.SIGKILL)
    agent.wait(10)
    again = processes.start(_agent(hub, Path("dev")), name="agent2", cwd=tmp_path)
    wait_for(lambda: "connected to hub" in processes.log(again), timeout=30, what="agent reconnected")
    assert f"adopted running runtime pid {runtime_pid}" in processes.log(again)
    assert _status(data)["services"][0]["pid"] == runtime_pid  # not restarted needlessly

    assert processes.stop(again) == 0
    assert "service adopt-svc: runtime stopped" in processes.log(again)
    assert process_start_time(runtime_pid) == 0  # gone (at most a zombie waiting for init to reap it)

    # Started again after that clean stop: the service comes back at once, not counted as a crash.
    third = processes.start(_agent(hub, Path("dev")), name="agent3", cwd=tmp_path)
    wait_for(lambda: "adopt-svc generation 1: HEALTHY" in processes.log(third), timeout=60, what="service back")
    assert "starting generation 1 again" in processes.log(third) and "RESTARTING" not in processes.log(third)
    assert _status(data)["services"][0]["restarts"] == 0
