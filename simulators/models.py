"""Real models built offline from what installed packages ship (never downloaded).

- digits: sklearn LogisticRegression on the bundled `load_digits` data, exported
  with skl2onnx (input "X" float32 [N, 64], outputs label int64 [N] and
  probabilities float32 [N, 10]).
- squeezenet: `light_squeezenet.onnx` shipped inside the `onnx` wheel (input
  "data_0" float32 [1, 3, 224, 224]).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


def digits_data() -> tuple[np.ndarray, np.ndarray]:
    """The held-out test rows (float32 [450, 64]) and labels of the digits split used for training."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    _, x_test, _, y_test = train_test_split(x.astype(np.float32), y, test_size=0.25, random_state=0)
    return x_test, y_test


def build_digits_onnx(path: Path, *, max_iter: int = 5000) -> Path:
    """Train the digits classifier and write it to `path` as ONNX; return the path."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, _, y_train, _ = train_test_split(x.astype(np.float32), y, test_size=0.25, random_state=0)
    clf = LogisticRegression(max_iter=max_iter).fit(x_train, y_train)
    onx = to_onnx(
        clf,
        initial_types=[("X", FloatTensorType([None, 64]))],
        options={id(clf): {"zipmap": False}},  # plain tensors, no ZipMap
        target_opset=17,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(onx.SerializeToString())
    tmp.replace(path)
    return path


def squeezenet_source() -> Path:
    """Path of the small SqueezeNet network that ships inside the `onnx` wheel."""
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_squeezenet.onnx"


def copy_squeezenet(path: Path) -> Path:
    """Copy the packaged SqueezeNet to `path`; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(squeezenet_source(), path)
    return path
