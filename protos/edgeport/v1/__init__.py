"""Edgeport agent<->hub protocol, v1 (generated from agent.proto at install time).

Import the generated modules directly (`from protos.edgeport.v1 import agent_pb2`);
nothing is imported here, so an MQTT agent does not pay for grpc (`agent_pb2_grpc`).
"""
