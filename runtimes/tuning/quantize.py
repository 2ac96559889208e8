"""Int8 dynamic quantization (onnxruntime.quantization) for small devices, cached by the model's digest."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def quantized_path(model_path: Path, cache_dir: Path | None = None) -> Path:
    """Where the int8 variant of `model_path` lives: keyed by its sha256 so a changed model re-quantizes."""
    digest = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()[:16]
    base = cache_dir or Path(os.environ.get("EDGEPORT_RUNTIME_CACHE", Path(tempfile.gettempdir()) / "edgeport-int8"))
    return base / f"{Path(model_path).stem}.{digest}.int8.onnx"


def quantize_int8(model_path: Path, cache_dir: Path | None = None) -> Path:
    """Write (once) and return an int8 dynamically quantized copy of `model_path`.

    Weights become int8; activations are quantized at run time, so no calibration data is needed.
    The model directory is never written to (it may be read-only or shared by versions).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = quantized_path(model_path, cache_dir)
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    try:
        quantize_dynamic(str(model_path), str(tmp), weight_type=QuantType.QInt8)
        tmp.replace(out)  # atomic: a concurrent start never reads a half-written file
    finally:
        tmp.unlink(missing_ok=True)
    return out
