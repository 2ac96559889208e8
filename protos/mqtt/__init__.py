"""The Edgeport protocol over MQTT 5: the topic layout, and the client both the hub and the agent connect with.

    topics      where each message travels ({prefix}/{device}/desired, inbox, reported, online)
    codec       the MQTT 5 packets an Edgeport client speaks, encoded and decoded
    connection  MqttConnection: one client connection as an asyncio Protocol (over TLS when given a context)
    url         broker URLs: mqtts:// (TLS, 8883) or mqtt:// (plain, 1883: loopback only unless insecure)

The messages themselves are protos/edgeport/v1 (one serialized protobuf per MQTT message, as on
the gRPC stream). Topic layout, codec and connection are one contract, so they live here once.
"""

from protos.mqtt.codec import Connack, Connect, Message, ProtocolError, Will, reason_name
from protos.mqtt.connection import MqttConnection
from protos.mqtt.topics import (
    DEFAULT_PREFIX,
    DESIRED,
    INBOX,
    OFFLINE_PAYLOAD,
    ONLINE,
    ONLINE_PAYLOAD,
    REPORTED,
    Topics,
)

__all__ = [
    "DEFAULT_PREFIX",
    "DESIRED",
    "INBOX",
    "OFFLINE_PAYLOAD",
    "ONLINE",
    "ONLINE_PAYLOAD",
    "REPORTED",
    "Connack",
    "Connect",
    "Message",
    "MqttConnection",
    "ProtocolError",
    "Topics",
    "Will",
    "reason_name",
]
