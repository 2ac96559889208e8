"""Batcher: concurrent requests become one model call; each caller gets its own rows back."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from runtimes.backends import OnnxBackend
from runtimes.batching import Batcher
from runtimes.errors import RunFailed
from runtimes.metrics import Metrics
from runtimes.tuning import HardwareProfile
from simulators.models import digits_data


@pytest.fixture(scope="module")
def backend(digits_model: Path) -> OnnxBackend:
    """The digits model on a one-thread session."""
    return OnnxBackend(digits_model, HardwareProfile(1, 1, 2**30, "x86_64"))


def test_concurrent_requests_share_batches(backend: OnnxBackend) -> None:
    x = digits_data()[0][:20]
    expected = backend.predict({"X": x})["label"].tolist()
    metrics = Metrics("t")

    async def main() -> list[int]:
        batcher = Batcher(backend, 8, 0.05, ThreadPoolExecutor(1), metrics)
        futs = [batcher.submit({"X": x[i : i + 1]}, None) for i in range(20)]
        return [int((await f)["label"][0]) for f in futs]

    assert asyncio.run(main()) == expected
    assert metrics.batch_size.sum == 20
    assert metrics.batch_size.count == 3  # 8 + 8 (size reached) + 4 (delay expired)


def test_different_shapes_run_separately_and_errors_reach_every_caller(backend: OnnxBackend) -> None:
    metrics = Metrics("t")

    async def main() -> tuple[object, object, object]:
        batcher = Batcher(backend, 64, 0.01, ThreadPoolExecutor(1), metrics)
        ok = batcher.submit({"X": np.zeros((2, 64), np.float32)}, ["label"])
        bad1 = batcher.submit({"X": np.zeros((1, 10), np.float32)}, None)
        bad2 = batcher.submit({"X": np.zeros((1, 10), np.float32)}, None)
        return await asyncio.gather(ok, bad1, bad2, return_exceptions=True)

    ok, bad1, bad2 = asyncio.run(main())
    assert isinstance(ok, dict) and ok["label"].shape == (2,)
    assert isinstance(bad1, RunFailed) and isinstance(bad2, RunFailed)
