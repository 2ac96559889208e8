"""Protocol-independent V2 inference request/response and the datatype table shared by every codec."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# V2 datatype -> numpy dtype; BYTES are object arrays of `bytes`.
DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}

# onnxruntime's type strings -> V2 datatype.
ONNX_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def v2_datatype(arr: np.ndarray) -> str:
    """The V2 datatype of a numpy array (str/bytes/object arrays are BYTES)."""
    kind = arr.dtype.kind
    if kind in "OSU":
        return "BYTES"
    for name, dt in DTYPES.items():
        if dt == arr.dtype:
            return name
    raise TypeError(f"no V2 datatype for numpy dtype {arr.dtype}")


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as V2 metadata describes it (-1 for a variable dimension)."""

    name: str
    datatype: str
    shape: list[int]

    def as_json(self) -> dict[str, Any]:
        """The metadata JSON object."""
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


@dataclass
class InferRequest:
    """One inference: named input arrays, which outputs to return, and whether as binary."""

    inputs: dict[str, np.ndarray]
    outputs: list[str] | None = None
    binary_outputs: dict[str, bool] = field(default_factory=dict)
    binary_default: bool = False
    id: str | None = None


@dataclass
class InferResponse:
    """Named output arrays of one inference."""

    model_name: str
    model_version: str
    outputs: dict[str, np.ndarray]
    id: str | None = None
