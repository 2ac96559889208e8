"""Open Inference Protocol (V2) gRPC definitions, in a private descriptor pool.

Loaded from the descriptor set compiled at install time (grpc_predict_v2.binpb)
rather than from generated *_pb2 modules, so that a process may also import
client libraries (tritonclient) that register the same `inference.*` names in
protobuf's default pool without a "duplicate symbol" clash.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

SERVICE_NAME = "inference.GRPCInferenceService"
_DESCRIPTOR_SET = Path(__file__).with_name("grpc_predict_v2.binpb")


@cache
def _pool() -> descriptor_pool.DescriptorPool:
    fds = descriptor_pb2.FileDescriptorSet.FromString(_DESCRIPTOR_SET.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    return pool


@cache
def message_class(name: str) -> type[Message]:
    """The message class for `name`, e.g. "ModelInferRequest" (package `inference`)."""
    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(f"inference.{name}"))


def service_methods() -> dict[str, tuple[type[Message], type[Message]]]:
    """RPC name -> (request class, response class) for GRPCInferenceService."""
    svc = _pool().FindServiceByName(SERVICE_NAME)
    return {m.name: (message_class(m.input_type.name), message_class(m.output_type.name)) for m in svc.methods}
