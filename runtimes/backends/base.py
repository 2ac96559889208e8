"""What every backend offers the DataPlane."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from runtimes.v2.types import TensorSpec


@dataclass
class V1Request:
    """A `/score` request as the entry-script contract sees it (rawhttp scripts get all of it)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes | bytearray  # a large body arrives in one bytearray (see http.protocol)


@dataclass
class V1Response:
    """A `/score` answer; `run_ms` is the time spent in run() (sent back as a header)."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    run_ms: float = 0.0


class TensorBackend(Protocol):
    """A model that maps named arrays to named arrays (ONNX); usable by V2 and batching."""

    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def predict(self, inputs: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Run the model once."""
        ...

    def check(self, inputs: dict[str, np.ndarray], outputs: list[str] | None = None) -> None:
        """Raise BadRequest when the inputs do not fit the model."""
        ...
