"""`python -m simulators` bad input: one clear line, exit 2 (1 when the hub cannot be reached), no traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import PYTHON, REPO, free_port


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "simulators", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["explode"], 2, "unknown command 'explode'"),
        (["fleet", "--count", "2", "--profile", "toaster"], 2, "unknown device profile 'toaster'"),
        (["fleet", "--count", "0"], 2, "--count must be at least 1"),
        (["fleet", "--count", "1000000"], 2, "--count 1000000: the agents need ~5,000,200 open files"),
        (["fleet", "--count", "1", "--label", "novalue"], 2, "--label 'novalue': expected KEY=VALUE"),
        (["fleet", "--count", "1", "--hub", "127.0.0.1:{port}"], 1, "cannot reach the hub"),
    ],
)
def test_fleet_bad_input(args: list[str], code: int, message: str, tmp_path: Path) -> None:
    args = [a.format(port=free_port()) for a in args]
    done = _run(*args, *(["--data-dir", str(tmp_path)] if args[0] == "fleet" else []))
    assert done.returncode == code, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
