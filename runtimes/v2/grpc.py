"""V2 gRPC front: `inference.GRPCInferenceService` on grpc.aio, calling the same DataPlane.

Message classes come from protos/inference's private descriptor pool (no generated *_pb2, so the
process could also load tritonclient's). Outputs are always returned as raw_output_contents, as
Triton does; inputs may come as raw_input_contents or typed `contents`.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import grpc
import numpy as np

from protos.inference import SERVICE_NAME, message_class, service_methods
from runtimes.auth import Authenticator
from runtimes.dataplane import DataPlane
from runtimes.errors import BadRequest, ScoringError, one_line
from runtimes.v2 import codec
from runtimes.v2.types import DTYPES, InferRequest, InferResponse, v2_datatype

# V2 datatype -> the InferTensorContents field holding it when not sent raw.
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def decode_infer_request(msg: Any) -> InferRequest:
    """ModelInferRequest -> InferRequest (BadRequest on malformed tensors)."""
    raw = list(msg.raw_input_contents)
    if raw and len(raw) != len(msg.inputs):
        raise BadRequest(f"{len(raw)} raw_input_contents for {len(msg.inputs)} inputs")
    if not msg.inputs:
        raise BadRequest("ModelInferRequest has no inputs")
    inputs: dict[str, np.ndarray] = {}
    for i, t in enumerate(msg.inputs):
        where = f"inputs[{i}] ({t.name[:64]!r})"
        if t.datatype not in DTYPES:
            raise BadRequest(f"{where}: unknown datatype {t.datatype!r}")
        shape = [int(d) for d in t.shape]
        if any(d < 0 for d in shape):
            raise BadRequest(f"{where}: shape {shape!r:.80} has a negative dimension")
        codec.check_dims(shape, where)
        if raw:
            inputs[t.name] = codec.raw_to_array(raw[i], t.datatype, shape, where)
            continue
        field = _CONTENTS_FIELD.get(t.datatype)
        if field is None:
            raise BadRequest(f"{where}: {t.datatype} must be sent in raw_input_contents")
        values = list(getattr(t.contents, field))
        if len(values) != math.prod(shape):
            raise BadRequest(
                f"{where}: {len(values)} values in contents.{field} but shape {shape} needs {math.prod(shape)}"
            )
        dtype = DTYPES[t.datatype]
        if t.datatype == "BYTES":
            arr = np.empty(len(values), dtype=np.object_)
            arr[:] = values
        else:
            arr = np.array(values, dtype=dtype)
        inputs[t.name] = codec.reshape(arr, shape, where)
    return InferRequest(inputs=inputs, outputs=[o.name for o in msg.outputs] or None, id=msg.id or None)


def encode_infer_response(resp: InferResponse, response_cls: type[Any]) -> Any:
    """InferResponse -> ModelInferResponse with raw_output_contents."""
    msg = response_cls(model_name=resp.model_name, model_version=resp.model_version, id=resp.id or "")
    for name, arr in resp.outputs.items():
        msg.outputs.add(name=name, datatype=v2_datatype(arr), shape=list(arr.shape))
        msg.raw_output_contents.append(codec.array_to_raw(arr))
    return msg


class GrpcInferenceService:
    """The six RPCs, as grpc.aio handlers."""

    def __init__(self, dataplane: DataPlane, auth: Authenticator) -> None:
        self.dp = dataplane
        self.auth = auth
        self.methods = service_methods()

    def handler(self) -> grpc.GenericRpcHandler:
        """A generic handler to add to a grpc.aio server."""
        table = {}
        for name, (req_cls, resp_cls) in self.methods.items():
            fn = getattr(self, name)
            table[name] = grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=req_cls.FromString, response_serializer=resp_cls.SerializeToString
            )
        return grpc.method_handlers_generic_handler(SERVICE_NAME, table)

    async def _abort(self, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        if isinstance(exc, ScoringError):
            await context.abort(exc.grpc_code, one_line(str(exc)))
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Live while the process answers."""
        return message_class("ServerLiveResponse")(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Ready once init() finished."""
        return message_class("ServerReadyResponse")(ready=self.dp.ready)

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Ready for a known model; NOT_FOUND for an unknown one."""
        try:
            ready = self.dp.model_ready(request.name, request.version or None)
        except Exception as exc:
            await self._abort(context, exc)
        return message_class("ModelReadyResponse")(ready=ready)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Name, version, extensions."""
        return message_class("ServerMetadataResponse")(**self.dp.server_metadata())

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Inputs and outputs of the model."""
        try:
            self.auth.check(_authorization(context))
            meta = self.dp.model_metadata(request.name, request.version or None)
        except Exception as exc:
            await self._abort(context, exc)
        cls = message_class("ModelMetadataResponse")
        return cls(**{k: v for k, v in meta.items() if k in cls.DESCRIPTOR.fields_by_name})

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """One inference."""
        try:
            self.auth.check(_authorization(context))
            req = decode_infer_request(request)
            result = self.dp.infer(request.model_name, request.model_version or None, req)
            if inspect.isawaitable(result):
                result = await result
            return encode_infer_response(result, message_class("ModelInferResponse"))
        except Exception as exc:
            await self._abort(context, exc)


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode()
    return None
