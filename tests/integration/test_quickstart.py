"""The README's Quick start main job, run exactly as a user runs it."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_registers_deploys_and_scores_on_every_device(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "simulators", "demo"],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # where its own work dir goes, to see that it is removed
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    # each simulated device answered /score with the right digit for the held-out row
    answers = re.findall(r"^(\S+): POST (\S+) -> \{\"label\": \[(\d+)\].*\(true label (\d+)\)$", out, re.M)
    assert {a[0] for a in answers} == {"edge-1", "vm-1"}, out[-4000:]
    assert all(predicted == true for _, _, predicted, true in answers)
    assert "demo finished" in out
    assert "removed the work dir" in out and list(tmp_path.glob("edgeport-demo-*")) == [], out[-2000:]
    # nothing left running: the hub and agents were stopped, so their scoring URIs no longer answer
    for _, uri, _, _ in answers:
        port = int(uri.split(":")[2].split("/")[0])
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    print(f"demo took {time.monotonic() - t0:.1f}s")
