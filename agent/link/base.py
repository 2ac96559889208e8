"""The transport-independent link contract.

Everything above the link (reconciler, outbox, daemon) sees only this: a Hello
answered by a Welcome, AgentMessages out, HubMessages in. Delivery is
at-least-once in both directions; sequence numbers and revisions (see
protos/edgeport/v1/agent.proto) make repeats harmless.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from protos.edgeport.v1 import agent_pb2


class LinkClosed(Exception):
    """The session to the hub ended (network cut, hub gone, credentials refused)."""


class Link(Protocol):
    """One session to the hub. A new `Link` is opened after every `LinkClosed`."""

    async def open(self, hello: agent_pb2.Hello) -> agent_pb2.Welcome:
        """Connect, send `hello`, and return the hub's Welcome. Raises LinkClosed on failure."""
        ...

    async def send(self, message: agent_pb2.AgentMessage) -> None:
        """Send one message; raises LinkClosed when the session is gone."""
        ...

    def incoming(self) -> AsyncIterator[agent_pb2.HubMessage]:
        """HubMessages as they arrive; ends (or raises LinkClosed) when the session ends."""
        ...

    async def close(self) -> None:
        """End the session; idempotent."""
        ...
