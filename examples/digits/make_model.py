"""Write model.onnx next to this file: a digits classifier trained on scikit-learn's bundled data.

Nothing is downloaded: `load_digits` ships inside scikit-learn, and skl2onnx exports the
fitted model to ONNX (input "X" float32 [N, 64], outputs "label" int64 [N] and
"probabilities" float32 [N, 10]). Needs scikit-learn and skl2onnx (`pip install -e '.[dev]'`).

    python examples/digits/make_model.py            # -> examples/digits/model.onnx
    python examples/digits/make_model.py out.onnx   # somewhere else
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split


def main(argv: list[str]) -> int:
    """Train, report the held-out accuracy, export; the path is the first argument or ./model.onnx here."""
    target = Path(argv[0]) if argv else Path(__file__).resolve().parent / "model.onnx"
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x.astype(np.float32), y, test_size=0.25, random_state=0)
    clf = LogisticRegression(max_iter=5000).fit(x_train, y_train)
    onx = to_onnx(
        clf,
        initial_types=[("X", FloatTensorType([None, 64]))],
        options={id(clf): {"zipmap": False}},  # plain tensors rather than a list of dicts
        target_opset=17,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(onx.SerializeToString())
    print(f"wrote {target} ({target.stat().st_size} bytes; held-out accuracy {clf.score(x_test, y_test):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
