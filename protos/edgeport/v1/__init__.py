"""Edgeport agent<->hub protocol, v1 (generated from agent.proto at install time)."""

from protos.edgeport.v1 import agent_pb2, agent_pb2_grpc

__all__ = ["agent_pb2", "agent_pb2_grpc"]
