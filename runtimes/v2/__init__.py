"""Open Inference Protocol (V2): request/response types, the REST codec and the gRPC front."""

from runtimes.v2.types import DTYPES, InferRequest, InferResponse, TensorSpec

__all__ = ["DTYPES", "InferRequest", "InferResponse", "TensorSpec"]
