"""The MQTT topic layout, the one both the hub's bridge and the agent's link use.

Per device, under a configurable prefix (default `edgeport`):

    {prefix}/{device}/desired   hub -> device  HubMessage(desired), retained, QoS 1
    {prefix}/{device}/inbox     hub -> device  HubMessage (welcome, ack, log/profile requests), QoS 1
    {prefix}/{device}/reported  device -> hub  AgentMessage (hello, status, telemetry, heartbeat...), QoS 1
    {prefix}/{device}/online    device -> hub  "online" retained on connect; Last Will "offline", retained

One serialized protobuf per MQTT message, exactly as on the gRPC stream.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "edgeport"
DESIRED, INBOX, REPORTED, ONLINE = "desired", "inbox", "reported", "online"
ONLINE_PAYLOAD, OFFLINE_PAYLOAD = b"online", b"offline"


@dataclass(frozen=True)
class Topics:
    """Topic names under one prefix."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix or any(c in self.prefix for c in "+#") or self.prefix.startswith("/") \
                or self.prefix.endswith("/"):
            raise ValueError(f"invalid MQTT topic prefix {self.prefix!r}: no '+', '#' or leading/trailing '/'")

    def of(self, kind: str, device: str) -> str:
        """The device's topic of one kind (DESIRED, INBOX, REPORTED or ONLINE)."""
        return f"{self.prefix}/{device}/{kind}"

    def desired(self, device: str) -> str:
        """Where the device's DesiredState is retained."""
        return self.of(DESIRED, device)

    def inbox(self, device: str) -> str:
        """Hub -> device one-off messages (welcome, acks, requests)."""
        return self.of(INBOX, device)

    def reported(self, device: str) -> str:
        """Device -> hub AgentMessages."""
        return self.of(REPORTED, device)

    def online(self, device: str) -> str:
        """Device presence: 'online' / 'offline' (Last Will), retained."""
        return self.of(ONLINE, device)

    def all(self, kind: str) -> str:
        """Subscription filter for one kind across every device, e.g. `edgeport/+/reported`."""
        return f"{self.prefix}/+/{kind}"

    def parse(self, topic: str) -> tuple[str, str] | None:
        """(device, kind) of a topic under this prefix, or None when it is not one of ours."""
        head = self.prefix + "/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head):].split("/")
        if len(parts) != 2 or not parts[0]:
            return None
        return parts[0], parts[1]
