"""`python -m simulators fleet` against a real hub: new devices are enrolled first, then the process starts
afresh (as an agent does after enrolling) and runs its agents without enrollment's libraries in memory."""

from __future__ import annotations

from pathlib import Path

from tests.integration.control_support import start_control_hub
from tests.integration.registry_support import api_get
from tests.support import PYTHON, REPO, Processes, wait_for


def _online(url: str) -> int:
    devices = api_get(url, "/api/v1/devices")
    return sum(1 for d in (devices["devices"] if isinstance(devices, dict) else devices) if d.get("online"))


def test_fleet_enrolls_then_starts_afresh_without_enrollment_in_memory(processes: Processes, tmp_path: Path) -> None:
    hub = start_control_hub(processes, tmp_path / "hub")
    address = hub.url.removeprefix("http://")
    fleet = processes.start(
        [PYTHON, "-m", "simulators", "fleet", "--count", "3", "--hub", address, "--transport", "grpc",
         "--profile", "k8s-node", "--data-dir", str(tmp_path / "fleet"), "--name-prefix", "fx",
         "--token", hub.hub.token],
        name="fleet", cwd=REPO,
    )  # fmt: skip
    wait_for(lambda: _online(hub.url) == 3, timeout=60, what="3 fleet devices online")
    wait_for(lambda: "agent(s) over grpc started" in processes.log(fleet), timeout=30, what="the fleet's start line")
    log = processes.log(fleet)
    assert "3 device(s) enrolled" in log and "starting afresh" in log
    assert log.index("starting afresh") < log.index("agent(s) over grpc started")
    maps = Path(f"/proc/{fleet.pid}/maps").read_text()  # the same PID: execv replaced the process image
    assert "cryptography" not in maps, "the agents run in a process that never loaded enrollment's libraries"
    assert all((tmp_path / "fleet" / f"fx-{i:05d}" / "identity").is_dir() for i in range(3))
