"""A runtime that fails to start is reported with its own error line (the last exception line of its log)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.supervisor import PYTHON, RuntimeSpec, RuntimeUnhealthy, Supervisor, error_line, failure, free_port

TRACEBACK = [
    "2026-01-01 10:00:00,000 INFO runtimes: listening: http://127.0.0.1:1234",
    "Traceback (most recent call last):",
    '  File "/srv/source/score.py", line 2, in init',
    '    raise RuntimeError("calibration table missing")',
    "RuntimeError: calibration table missing",
    "2026-01-01 10:00:00,001 ERROR runtimes: init() failed in score.py: RuntimeError: calibration table missing",
    "error: init() failed in score.py: RuntimeError: calibration table missing",
    "2026-01-01 10:00:00,002 INFO runtimes: stopping",
]


def test_the_last_exception_line_is_the_error_line() -> None:
    assert error_line(TRACEBACK) == "RuntimeError: calibration table missing"
    dotted = ["Traceback (most recent call last):", "json.decoder.JSONDecodeError: Expecting value: line 1 column 1"]
    assert error_line(dotted) == "json.decoder.JSONDecodeError: Expecting value: line 1 column 1"
    assert error_line(["KeyboardInterrupt"]) == "KeyboardInterrupt"


def test_without_a_traceback_the_runtimes_error_line_is_used() -> None:
    lines = ["INFO runtimes: loading", "error: --onnx model.onnx: no such file in /srv/models"]
    assert error_line(lines) == "--onnx model.onnx: no such file in /srv/models"
    assert error_line(["INFO runtimes: listening", "INFO runtimes: stopping"]) == ""
    assert error_line([]) == ""


def test_only_the_latest_start_counts() -> None:
    earlier = ["--- 2026-01-01T10:00:00 agent starts generation 3", "ValueError: an older attempt"]
    latest = ["--- 2026-01-01T10:05:00 agent starts generation 3", "INFO runtimes: stopping"]
    assert error_line(earlier + latest) == ""
    assert error_line(earlier + latest + ["OSError: [Errno 28] No space left on device"]) == (
        "OSError: [Errno 28] No space left on device"
    )


def test_failure_names_the_error_line_when_there_is_one() -> None:
    assert failure("runtime exited with code 1 during start", TRACEBACK) == (
        "runtime exited with code 1 during start: RuntimeError: calibration table missing"
    )
    assert failure("runtime not healthy within 5s", []) == "runtime not healthy within 5s"
    assert len(error_line(["ValueError: " + "x" * 5000])) == 300


def test_a_real_runtime_whose_init_raises(tmp_path: Path) -> None:
    source, models = tmp_path / "source", tmp_path / "models"
    source.mkdir()
    models.mkdir()
    broken = 'def init():\n    raise RuntimeError("calibration table missing: /etc/cal.json")\n\n'
    (source / "score.py").write_text(broken + "def run(raw):\n    return raw\n")
    supervisor = Supervisor(tmp_path / "logs")
    spec = RuntimeSpec(service="cal", generation=2, python=PYTHON, model_dir=models, source_dir=source,
                       entry_script="score.py", port=free_port(), grpc_port=free_port())  # fmt: skip
    proc = supervisor.start(spec)
    try:
        with pytest.raises(RuntimeUnhealthy) as info:
            asyncio.run(supervisor.wait_healthy(proc, 60))
    finally:
        supervisor.stop(proc)
    assert info.value.reason == (
        "runtime exited with code 1 during start: RuntimeError: calibration table missing: /etc/cal.json"
    )
    assert any("Traceback" in line for line in info.value.log_tail)
