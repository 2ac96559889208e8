"""Int8 dynamic quantization (onnxruntime.quantization) for small devices, cached by the model's digest."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

# Operators onnxruntime's dynamic quantizer rewrites (weights to int8).
QUANTIZABLE_OPS = {"Conv", "MatMul", "Gemm", "Attention", "LSTM", "GRU", "Gather", "EmbedLayerNormalization"}
log = logging.getLogger("runtimes.tuning")


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
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = quantized_path(model_path, cache_dir)
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    src = out.with_suffix(f".{os.getpid()}.src")
    try:
        # Fold constants first (with onnxruntime's basic optimizer): some exports compute their
        # weights at load time (ConstantOfShape...), and only initializers can be quantized.
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(src)
        real_inputs = {
            i.name for i in ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"]).get_inputs()
        }
        # Older exports list weights among the graph inputs; the quantizer only quantizes
        # initializers that are not inputs, so keep only the inputs a caller really feeds.
        model = onnx.load(str(src))
        kept = [i for i in model.graph.input if i.name in real_inputs]
        del model.graph.input[:]
        model.graph.input.extend(kept)
        if not {n.op_type for n in model.graph.node} & QUANTIZABLE_OPS:
            log.warning("int8: %s has no operator dynamic quantization applies to; serving it as is", model_path.name)
            return Path(model_path)
        # IR < 4 requires every initializer to be an input; lift it so the file stays valid.
        model.ir_version = max(model.ir_version, 7)
        onnx.save(model, str(src))
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8)
        tmp.replace(out)  # atomic: a concurrent start never reads a half-written file
    finally:
        tmp.unlink(missing_ok=True)
        src.unlink(missing_ok=True)
    return out
