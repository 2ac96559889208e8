"""No-code backend: one ONNX model run through onnxruntime."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from runtimes import jsonload
from runtimes.errors import BadRequest, InitFailed, RunFailed
from runtimes.tuning import Concurrency, HardwareProfile, create_session
from runtimes.v2.types import DTYPES, ONNX_TO_V2, TensorSpec

log = logging.getLogger("runtimes.onnx")


def _spec(arg: Any) -> TensorSpec:
    shape = [d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or [])]
    return TensorSpec(arg.name, ONNX_TO_V2.get(arg.type, "BYTES"), shape)


class OnnxBackend:
    """An onnxruntime session with its V2 metadata, input checks and a measured cost per call."""

    platform = "onnxruntime_onnx"

    def __init__(
        self,
        model_path: Path,
        profile: HardwareProfile,
        providers: list[str] | None = None,
        concurrency: Concurrency | None = None,
        strict_providers: bool = False,
    ) -> None:
        """Open the model; raises InitFailed with a one-line reason when it cannot be loaded.

        `concurrency` (default: one single-threaded call per CPU) sets the session's intra-op
        threads; its `workers` is how many calls the DataPlane runs at once.
        """
        self.concurrency = concurrency or Concurrency.plan(profile)
        if not model_path.is_file():
            raise InitFailed(f"ONNX model not found: {model_path}")
        try:
            self.session, self.choice = create_session(
                model_path, profile, providers, self.concurrency, strict_providers
            )
        except ValueError as exc:
            raise InitFailed(str(exc)) from None
        except Exception as exc:  # onnxruntime raises its own types for corrupt models
            raise InitFailed(f"cannot load ONNX model {model_path}: {exc}") from None
        self.inputs = [_spec(a) for a in self.session.get_inputs()]
        self.outputs = [_spec(a) for a in self.session.get_outputs()]
        self._input_by_name = {s.name: s for s in self.inputs}
        self._output_names = [s.name for s in self.outputs]
        # /score numbers become these before the cast to each input's type (float32 when every
        # input is FP32: the same values, half the memory of float64)
        fp32_only = all(s.datatype == "FP32" for s in self.inputs)
        self._v1_float = np.dtype(np.float32) if fp32_only else np.dtype(np.float64)
        self._run = self.session.run
        self.cost_s = self._measure()

    def _measure(self) -> float:
        """Median seconds of a warm call on a one-row zero input (decides inline vs thread)."""
        feed = {}
        for s in self.inputs:
            shape = [d if d >= 0 else 1 for d in s.shape]
            dt = DTYPES[s.datatype]
            feed[s.name] = np.zeros(shape, dtype=dt) if dt.kind != "O" else np.full(shape, "", dtype=np.object_)
        times = []
        try:
            for _ in range(5):
                t = time.perf_counter()
                self._run(None, feed)
                times.append(time.perf_counter() - t)
        except Exception as exc:  # models with data-dependent shapes: assume expensive
            log.info("warm-up run skipped (%s); running the model off the event loop", exc)
            return 1.0
        return sorted(times)[len(times) // 2]

    def check(self, inputs: dict[str, np.ndarray], outputs: list[str] | None = None) -> None:
        """Raise BadRequest naming the first input that does not match the model."""
        for name, spec in self._input_by_name.items():
            arr = inputs.get(name)
            if arr is None:
                raise BadRequest(f"missing input '{name}' ({spec.datatype} {spec.shape})")
            want = DTYPES[spec.datatype]
            if arr.dtype != want and not (want.kind == "O" and arr.dtype.kind in "OSU"):
                raise BadRequest(f"input '{name}': datatype must be {spec.datatype}, got {arr.dtype}")
            if arr.ndim != len(spec.shape) or any(
                d >= 0 and d != a for d, a in zip(spec.shape, arr.shape, strict=False)
            ):
                raise BadRequest(f"input '{name}': shape {list(arr.shape)} does not match the model's {spec.shape}")
        extra = set(inputs) - set(self._input_by_name)
        if extra:
            raise BadRequest(f"unknown input(s) {sorted(extra)}; the model takes {sorted(self._input_by_name)}")
        for o in outputs or ():
            if o not in self._output_names:
                raise BadRequest(f"unknown output '{o}'; the model has {self._output_names}")

    def predict(self, inputs: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Run the session; a failure inside onnxruntime becomes RunFailed with its message."""
        names = outputs or self._output_names
        try:
            results = self._run(names, inputs)
        except Exception as exc:
            raise RunFailed(f"model run failed: {exc}") from None
        return dict(zip(names, results, strict=True))

    def v1_inputs(self, body: bytes | bytearray, max_objects_bytes: int = 64 << 20) -> dict[str, np.ndarray]:
        """`{"data": ...}` → input arrays: one input takes the nested list; several take an object by name.

        Large numeric arrays are read straight into numpy (see jsonload); `max_objects_bytes`
        bounds what the rest may cost as Python objects.
        """
        try:
            doc = jsonload.loads(body, max_objects_bytes, float_dtype=self._v1_float)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or "data" not in doc:
            raise BadRequest('request body must be a JSON object with a "data" field')
        data = doc["data"]
        if len(self.inputs) == 1:
            spec = self.inputs[0]
            return {spec.name: self._to_array(spec, data)}
        if not isinstance(data, dict):
            raise BadRequest(f'"data" must be an object keyed by input name: {[s.name for s in self.inputs]}')
        return {s.name: self._to_array(s, data[s.name]) for s in self.inputs if s.name in data}

    @staticmethod
    def _to_array(spec: TensorSpec, value: Any) -> np.ndarray:
        dt = DTYPES[spec.datatype]
        try:
            arr = np.asarray(value, dtype=dt)
        except (ValueError, TypeError, OverflowError) as exc:
            raise BadRequest(
                f"input '{spec.name}': cannot read \"data\" as {spec.datatype} {spec.shape}: {exc}"
            ) from None
        if arr.ndim == len(spec.shape) - 1:  # one row sent without the batch dimension
            arr = arr[np.newaxis]
        return arr
