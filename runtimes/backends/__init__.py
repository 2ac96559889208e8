"""Model backends: an entry script (init/run) or a no-code ONNX model."""

from runtimes.backends.base import TensorBackend, V1Request, V1Response
from runtimes.backends.entry_script import EntryScriptBackend
from runtimes.backends.onnx import OnnxBackend

__all__ = ["EntryScriptBackend", "OnnxBackend", "TensorBackend", "V1Request", "V1Response"]
