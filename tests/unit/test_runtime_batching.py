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


def test_one_bad_request_fails_alone(tmp_path: Path) -> None:
    """A data-dependent failure in a merged call is retried per request: only the bad caller fails."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Sqrt", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
    )
    path = tmp_path / "sqrt.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    backend = OnnxBackend(path, HardwareProfile(1, 1, 2**30, "x86_64"))
    calls: list[int] = []
    real = backend.predict

    def flaky(inputs: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        calls.append(len(inputs["x"]))
        if (inputs["x"] < 0).any():  # stands in for a data-dependent model error
            raise RunFailed("negative input")
        return real(inputs, outputs)

    backend.predict = flaky  # type: ignore[method-assign]

    async def main() -> list[object]:
        batcher = Batcher(backend, 8, 0.01, ThreadPoolExecutor(1), Metrics("t"))
        futs = [batcher.submit({"x": np.full((1, 2), v, np.float32)}, None) for v in (4.0, -1.0, 9.0)]
        return await asyncio.gather(*futs, return_exceptions=True)

    good1, bad, good2 = asyncio.run(main())
    assert isinstance(bad, RunFailed)
    assert good1["y"].tolist() == [[2.0, 2.0]] and good2["y"].tolist() == [[3.0, 3.0]]  # type: ignore[index]
    assert calls == [3, 1, 1, 1]  # one merged call, then one by one


def test_outputs_without_batch_axis_are_not_split(tmp_path: Path) -> None:
    """A model whose output sums over rows cannot be batched: each caller still gets its own answer."""
    import onnx
    from onnx import TensorProto, helper

    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [0])
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        initializer=[axes],
    )
    path = tmp_path / "sum.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    backend = OnnxBackend(path, HardwareProfile(1, 1, 2**30, "x86_64"))

    async def main() -> list[dict[str, np.ndarray]]:
        batcher = Batcher(backend, 8, 0.01, ThreadPoolExecutor(1), Metrics("t"))
        futs = [batcher.submit({"x": np.full((2, 2), v, np.float32)}, None) for v in (1.0, 5.0)]
        return await asyncio.gather(*futs)

    first, second = asyncio.run(main())
    assert first["y"].tolist() == [2.0, 2.0] and second["y"].tolist() == [10.0, 10.0]
