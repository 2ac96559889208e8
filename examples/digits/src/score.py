"""Entry script for the digits model: init() loads it once, run() scores a JSON request.

The runtime sets AZUREML_MODEL_DIR to the folder holding the deployed model's files,
as Azure ML does, so this script runs unchanged there and here.
Request: {"data": [[64 pixel values 0-16], ...]}; answer: {"label": [digit, ...]}.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort

session: ort.InferenceSession | None = None


def init() -> None:
    """Load the model once, when the runtime starts."""
    global session
    session = ort.InferenceSession(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.onnx"))


def run(raw_data: str) -> dict[str, list[int]]:
    """Score the rows in the request; a malformed request is answered with a clear error."""
    rows = np.asarray(json.loads(raw_data)["data"], dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != 64:
        raise ValueError(f"expected rows of 64 pixel values, got shape {list(rows.shape)}")
    assert session is not None, "init() runs before run()"
    labels = session.run(["label"], {"X": rows})[0]
    return {"label": labels.tolist()}
