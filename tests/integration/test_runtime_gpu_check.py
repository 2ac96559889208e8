"""benchmarks/gpu_check.sh runs as is on a machine without a GPU: CPU measured, CUDA and TensorRT skipped."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support import PYTHON, REPO

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("build_model", ["", "1"], ids=["bundled-squeezenet", "built-conv-net"])
def test_gpu_check_measures_cpu_and_explains_skips(tmp_path: Path, build_model: str) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA: the script would measure it (run it by hand there)")
    env = {
        **os.environ,
        "PYTHON": PYTHON,
        "COUNT": "40",
        "CONCURRENCY": "2",
        "WARMUP": "5",
        "OUT": str(tmp_path),
        "GPU_CHECK_BUILD_MODEL": build_model,
    }
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh")], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = {r["provider"]: r for r in doc["results"]}
    assert rows["CPU"]["status"] == "ok" and rows["CPU"]["session_providers"] == ["CPUExecutionProvider"]
    assert rows["CPU"]["requests"] == 40 and rows["CPU"]["errors"] == 0 and rows["CPU"]["req_per_s"] > 0
    for gpu in ("CUDA", "TensorRT"):
        assert rows[gpu]["status"] == "skipped" and "not in this onnxruntime" in rows[gpu]["reason"]
    assert ("built with onnx.helper" in doc["model"]) == bool(build_model)
    assert "CPU " in proc.stdout and "req/s" in proc.stdout and "p50 ms" in proc.stdout
    assert (tmp_path / "gpu_check-CPU.log").exists()
