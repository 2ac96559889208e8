"""`hub serve` refuses settings out of range: one line naming the option, exit 2, before serving."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import PYTHON, REPO


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--reconnect-rate", "0", "--reconnect-rate must be 1-1000000 reconnections per second, got 0"),
        ("--reconnect-rate", "nan", "--reconnect-rate must be 1-1000000 reconnections per second, got nan"),
        ("--heartbeat-interval", "0", "--heartbeat-interval must be 1-3600 seconds, got 0"),
        ("--telemetry-interval", "4000", "--telemetry-interval must be 1-3600 seconds, got 4000"),
        ("--telemetry-retention", "5x", "--telemetry-retention: invalid duration '5x': use a positive number with "
         "s, m, h or d (e.g. 1h)"),
        ("--port", "70000", "--port must be 0 (any free port) or 1-65535, got 70000"),
    ],
)
def test_out_of_range_agent_channel_settings(tmp_path: Path, option: str, value: str, message: str) -> None:
    argv = [PYTHON, "-m", "hub", "serve", "--data-dir", str(tmp_path / "hub"), "--port", "0", "--grpc-port", "0"]
    done = subprocess.run([*argv, option, value], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: {message}"
