"""`hub device|service telemetry --every`: bad input is refused before any call to the hub, exit 2, one line."""

from __future__ import annotations

import subprocess

import pytest

from tests.support import PYTHON, REPO, free_port


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["device", "telemetry", "cam-01", "--every", "1m"], "--every needs --metric"),
        (["device", "telemetry", "cam-01", "--metric", "p99_ms", "--every", "soon"], "invalid duration 'soon'"),
        (["service", "telemetry", "scorer", "--metric", "p99_ms", "--since", "7d", "--every", "1s"], "at most 2000"),
        (["service", "telemetry", "scorer"], "the following arguments are required: --metric"),
    ],
)
def test_bad_telemetry_queries_exit_2_naming_what_is_wrong(args: list[str], message: str) -> None:
    hub = f"http://127.0.0.1:{free_port()}"  # nothing listens: the error must come before any call
    done = subprocess.run([PYTHON, "-m", "hub", *args, "--hub", hub], cwd=REPO, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
