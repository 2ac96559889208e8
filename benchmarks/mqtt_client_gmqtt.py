"""A simulated fleet whose agents speak MQTT through gmqtt (a maintained asyncio MQTT 5 client) instead of
protos/mqtt/connection.py, to weigh the two in benchmarks/mqtt_clients.py.

`GmqttConnection` offers what the agent's link uses of `MqttConnection` (open, publish, subscribe,
close; `unacked`, `receive_maximum`; the message, PUBACK and close callbacks) on a gmqtt Client,
with gmqtt's own reconnects off (the agent reconnects itself). Run as

    python benchmarks/mqtt_client_gmqtt.py FLEET-ARGS...     # same arguments as `python -m simulators fleet`
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gmqtt
from gmqtt.mqtt.handler import MQTTConnectError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protos.mqtt import Connack, Connect, Message
from protos.mqtt.codec import RECEIVE_MAXIMUM


class _Client(gmqtt.Client):  # type: ignore[misc]
    """A gmqtt Client that tells its owner about each PUBACK (gmqtt keeps that to itself)."""

    def __init__(self, *args: Any, owner: GmqttConnection, **kwargs: Any) -> None:
        self._owner = owner
        super().__init__(*args, **kwargs)

    def _remove_message_from_queue(self, mid: int) -> None:
        super()._remove_message_from_queue(mid)
        self._owner._acked(mid)


class GmqttConnection:
    """MqttConnection's interface over gmqtt."""

    def __init__(
        self,
        on_message: Callable[[Message], None],
        on_puback: Callable[[int, int], None] | None = None,
        on_close: Callable[[str], None] | None = None,
    ) -> None:
        self.on_message, self.on_puback, self.on_close = on_message, on_puback, on_close
        self.unacked: set[int] = set()
        self.receive_maximum = 65535
        self.reason = ""
        self._client: _Client | None = None
        self._subacks: dict[int, asyncio.Future[list[int]]] = {}
        self._up = False

    async def open(self, host: str, port: int, params: Connect, timeout_s: float = 15.0) -> Connack:
        will = None
        if params.will is not None:
            will = gmqtt.Message(params.will.topic, params.will.payload, qos=params.will.qos, retain=params.will.retain)
        client = _Client(params.client_id, clean_session=params.clean_start, will_message=will, owner=self,
                         session_expiry_interval=params.session_expiry_s)  # fmt: skip
        client.reconnect_retries = -2  # never (the agent's daemon reconnects with its own backoff)
        if params.username:
            client.set_auth_credentials(params.username, params.password or None)
        client.on_message = self._message
        client.on_subscribe = self._subscribed
        client.on_disconnect = self._disconnected
        self._client = client
        try:
            async with asyncio.timeout(timeout_s):
                await client.connect(host, port, keepalive=params.keepalive_s)
        except MQTTConnectError as exc:
            self.abort()
            return Connack(reason=exc._code, session_present=False)
        except BaseException:
            self.abort()
            raise
        self._up = True
        props = client._package_handler._connack_properties
        receive_maximum = props.get("receive_maximum")
        if receive_maximum:
            self.receive_maximum = receive_maximum[0]
        return Connack(reason=0, session_present=False, properties={RECEIVE_MAXIMUM: self.receive_maximum})

    @property
    def is_open(self) -> bool:
        return self._up and not self.reason

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        client = self._client
        if not self.is_open or client is None:
            raise ConnectionError(self.reason or "not connected")
        # Client.publish, keeping the packet id it does not return.
        mid, package = client._connection.publish(gmqtt.Message(topic, payload, qos=qos, retain=retain))
        if qos:
            client._persistent_storage.push_message(mid, package)
            self.unacked.add(mid)
        return int(mid or 0)

    def subscribe(self, filters: list[tuple[str, int]]) -> asyncio.Future[list[int]]:
        client = self._client
        if not self.is_open or client is None:
            raise ConnectionError(self.reason or "not connected")
        mid = client.subscribe([gmqtt.Subscription(topic, qos=qos) for topic, qos in filters])
        granted: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._subacks[mid] = granted
        return granted

    async def close(self, timeout_s: float = 2.0) -> None:
        client = self._client
        if client is not None and self.is_open:
            self.reason = "closed"
            try:
                async with asyncio.timeout(timeout_s):
                    await client.disconnect()
            except (TimeoutError, OSError):
                self.abort()
            self._closed("closed")
        self.abort()

    def abort(self) -> None:
        client = self._client
        if client is not None:
            client._is_active = False
            connection = client._connection
            if connection is not None:
                connection._transport.abort()

    def pause_reading(self) -> None:
        """Unused by the agent (the hub's front pauses its own connection)."""

    def resume_reading(self) -> None:
        """Unused by the agent."""

    # ---- gmqtt callbacks ----

    def _acked(self, mid: int) -> None:
        self.unacked.discard(mid)
        if self.on_puback is not None:
            self.on_puback(mid, 0)

    def _message(self, client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        self.on_message(Message(topic=topic, payload=payload, qos=qos, packet_id=0, retain=False))
        return 0

    def _subscribed(self, client: Any, mid: int, granted: tuple[int, ...], properties: Any) -> None:
        future = self._subacks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(list(granted))

    def _disconnected(self, client: Any, packet: Any, exc: Any = None) -> None:
        if self._client is not None:
            self._client._is_active = False  # no reconnect of gmqtt's own
        self._closed(f"connection lost: {exc}" if exc else "the broker closed the connection")

    def _closed(self, reason: str) -> None:
        was_up, self._up = self._up, False
        self.reason = self.reason or reason
        for granted in self._subacks.values():
            if not granted.done():
                granted.set_exception(ConnectionError(self.reason))
                granted.exception()
        self._subacks.clear()
        if was_up and self.on_close is not None:
            self.on_close(self.reason)


def main() -> int:
    """`python -m simulators fleet` with the agents' MQTT connection on gmqtt."""
    from agent.link import mqtt as agent_mqtt
    from simulators import fleet_cli

    agent_mqtt.MqttConnection = GmqttConnection  # type: ignore[misc,assignment]
    argv = sys.argv[1:]
    run_cli = fleet_cli._run_cli

    async def run_restarting_here(options: Any, duration: float, restart_argv: list[str] | None = None) -> int:
        # After enrolling, start afresh as this script (as `python -m simulators fleet` does as itself).
        return await run_cli(options, duration, [__file__, *argv])

    fleet_cli._run_cli = run_restarting_here  # type: ignore[assignment]
    return fleet_cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
