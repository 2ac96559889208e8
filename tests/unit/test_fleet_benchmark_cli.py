"""benchmarks/fleet.py and benchmarks/mqtt_clients.py bad input: one clear line, exit 2, before any process is
started."""

from __future__ import annotations

import subprocess

import pytest

from tests.support import PYTHON, REPO


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--per-process", "5000"], "--per-process 5000: must be 1-"),
        (["--per-process", "0"], "--per-process 0: must be 1-"),
        (["--sizes", "ten"], "--sizes 'ten': expected numbers like 100,1000"),
        (["--telemetry-interval", "0"], "--telemetry-interval 0: must be 1-3600 seconds"),
        (["--transports", "carrier-pigeon"], "--transports grpc and/or mqtt"),
    ],
)
def test_fleet_benchmark_bad_input(args: list[str], message: str) -> None:
    done = subprocess.run([PYTHON, "benchmarks/fleet.py", *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert "size " not in done.stdout  # nothing was started


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sizes", "ten"], "--sizes 'ten': expected numbers like 1000,2000"),
        (["--rounds", "0"], "--rounds at least 1"),
    ],
)
def test_mqtt_clients_benchmark_bad_input(args: list[str], message: str) -> None:
    done = subprocess.run([PYTHON, "benchmarks/mqtt_clients.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert "size " not in done.stdout
