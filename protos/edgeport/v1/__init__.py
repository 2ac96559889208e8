"""Edgeport agent<->hub protocol, v1 (generated from agent.proto at install time).

`agent_pb2` holds the messages (`from protos.edgeport.v1 import agent_pb2`). The gRPC stubs,
`agent_pb2_grpc`, are imported only by who uses gRPC, so an MQTT agent does not pay for grpc.
"""

from protos.edgeport.v1 import agent_pb2

__all__ = ["agent_pb2"]
