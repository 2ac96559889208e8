"""Fixtures shared by every test room (helpers live in tests/support.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.models import build_digits_onnx, copy_squeezenet
from tests.support import Processes

# `agent run` as root starts runtimes as an unprivileged user by default; test machines run as root with an
# interpreter that user cannot reach (under /root). Agents started by tests run them as root unless a test
# asks for a runtime user itself (tests/integration/test_runtime_user.py).
os.environ.setdefault("EDGEPORT_RUNTIME_USER", "root")


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Real subprocesses for one test; all are stopped when it ends, pass or fail."""
    p = Processes(tmp_path)
    try:
        yield p
    finally:
        p.stop_all()


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real digits classifier (sklearn -> skl2onnx) as `<dir>/model.onnx`, built once per run."""
    return build_digits_onnx(tmp_path_factory.mktemp("digits") / "model.onnx")


@pytest.fixture(scope="session")
def squeezenet_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SqueezeNet shipped in the onnx wheel, as `<dir>/model.onnx`."""
    return copy_squeezenet(tmp_path_factory.mktemp("squeezenet") / "model.onnx")


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    """Real subprocesses shared by one test module (starting a runtime costs about a second); all stopped at its end."""
    p = Processes(tmp_path_factory.mktemp("module-processes"))
    try:
        yield p
    finally:
        p.stop_all()
