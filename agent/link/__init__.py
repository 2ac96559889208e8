"""The agent's one session to the hub, whichever transport (gRPC stream or MQTT)."""

from agent.link.base import Link, LinkClosed

__all__ = ["Link", "LinkClosed"]
