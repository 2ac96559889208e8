"""benchmarks/reconnect.py: a small real run restarts the hub under a fleet per setting; bad input exits 2."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support import PYTHON, REPO

BENCH = "benchmarks/reconnect.py"


@pytest.mark.slow
def test_a_small_run_brings_the_fleet_back_after_each_restart(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    done = subprocess.run([PYTHON, BENCH, "--size", "6", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=170)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    figures = json.loads(out.read_text())
    assert figures["size"] == 6
    assert [(r["setting"], r["round"]) for r in figures["results"]] == [("burst", 1), ("spread", 1)]
    for r in figures["results"]:
        assert r["connects"] >= 6  # every device came back through the new hub
        assert 0 < r["back_s"] < r["outage_s"]
        assert r["api_answers"] >= 1 and r["api_max_ms"] >= r["api_median_ms"] > 0
    assert "burst" in done.stdout and "spread" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "0"], "--size 0 and --rounds 1: both must be at least 1"),
        (["--rounds", "0"], "--size 5000 and --rounds 0: both must be at least 1"),
        (["--settings", "gentle"], "--settings 'gentle': choose from burst, spread"),
    ],
)
def test_bad_input(args: list[str], message: str) -> None:
    done = subprocess.run([PYTHON, BENCH, *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert "reconnect benchmark" not in done.stdout  # nothing was started
