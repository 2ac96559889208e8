"""benchmarks/grpc_messages.py: a small real run gives CPU figures for every variant; bad input exits 2."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support import PYTHON, REPO

BENCH = "benchmarks/grpc_messages.py"


def test_a_small_run_measures_every_variant(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    done = subprocess.run([PYTHON, BENCH, "--streams", "4", "--rounds", "2", "--repeat", "1", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert set(figures["medians"]) == {"as shipped", "BDP probe on (grpc's default)"}
    assert len(figures["runs"]) == 2
    for run in figures["runs"]:
        assert run["streams"] == 4 and run["rounds"] == 2
        # CPU comes from /proc in clock ticks, which 8 round trips may not fill: a figure, never negative.
        assert 0 <= run["server_us_per_round_trip"] < 1e6 and 0 <= run["client_us_per_round_trip"] < 1e6
        assert run["wall_s"] >= 2 * 0.3  # the rounds ran, each after its quiet spell
    assert "medians over 1 run(s)" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--streams", "0"], "--streams 0: must be at least 1"),
        (["--rounds", "-1"], "--rounds -1: must be at least 1"),
        (["--repeat", "0"], "--repeat 0: must be at least 1"),
        (["--streams", "10000000"], "--streams 10000000: one socket each"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], message: str) -> None:
    done = subprocess.run([PYTHON, BENCH, *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
