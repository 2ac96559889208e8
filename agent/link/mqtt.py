"""The MQTT Link: the same protobuf messages as the gRPC stream, through a broker (MQTT 5).

Topics (protos/mqtt/topics.py, the layout the hub uses too), under the prefix the hub gave at enrollment:

    {prefix}/{device}/desired   in   HubMessage(desired), retained: a device that connects late gets it at once
    {prefix}/{device}/inbox     in   HubMessage (welcome, acks, requests)
    {prefix}/{device}/reported  out  AgentMessage (hello, status, telemetry, heartbeats...)
    {prefix}/{device}/online    out  "online" retained; Last Will "offline", retained

Everything is QoS 1 on a persistent session (clean start off, long session expiry), so
what the hub sends while the device is away is queued by the broker; only the hub's
cumulative Acks go at QoS 0 (a lost one is covered by the next, or the Welcome's acked_seq). `open` publishes
Hello and waits for the hub's Welcome on the inbox, like the gRPC stream's first exchange.

The connection is protos/mqtt/connection.py, an asyncio Protocol (no thread, no paho):
a simulated fleet runs thousands of links on one loop.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from agent.link.base import LinkClosed
from agent.state import Identity
from protos.edgeport.v1 import agent_pb2
from protos.mqtt import (
    DEFAULT_PREFIX,
    DESIRED,
    INBOX,
    OFFLINE_PAYLOAD,
    ONLINE,
    ONLINE_PAYLOAD,
    REPORTED,
    Connect,
    Message,
    MqttConnection,
    Topics,
    Will,
    reason_name,
)
from protos.mqtt.url import BrokerUrlError, client_tls_context, parse_broker_url

OPEN_TIMEOUT_S = 15.0
SESSION_EXPIRY_S = 7 * 24 * 3600  # the broker keeps our subscriptions and queued messages this long
# The broker publishes our Last Will 1.5 keep-alives after the link goes silent.
DEFAULT_KEEPALIVE_S = int(os.environ.get("EDGEPORT_MQTT_KEEPALIVE_S", "30"))
MAX_UNACKED_PUBLISHES = 500  # send() waits when this many publishes await PUBACK (bounded memory)
# Broker refusals that mean "these credentials are not (yet) valid". Right after enrollment the
# broker may not have reloaded its password file, so only repeated refusals mean "refused".
_AUTH_FAILURES = {134, 135}  # Bad User Name or Password, Not authorized
# Give up only after refusals spanning this long (a hub enrolling thousands of devices may take a while
# to reload the broker), so a revoked device stops, a freshly enrolled one does not.
REFUSED_GIVE_UP_S = float(os.environ.get("EDGEPORT_MQTT_REFUSED_GIVE_UP_S", "60"))
_refusals: dict[str, float] = {}  # device -> when its current run of credential refusals began (monotonic)




class MqttLink:
    """One session through an MQTT broker (implements agent.link.base.Link)."""

    def __init__(
        self,
        identity: Identity,
        *,
        broker: str | None = None,
        keepalive_s: int | None = None,
        ca_file: Path | None = None,
        insecure: bool = False,
    ) -> None:
        """`ca_file`: the hub CA pinned at enrollment, which an `mqtts://` broker's certificate must chain to;
        `insecure`: allow plain `mqtt://` to a broker off this machine (development only)."""
        self.identity = identity
        self.ca_file = ca_file
        self.insecure = insecure
        self.mqtt = dict(identity.mqtt or {})
        self.broker = broker or self.mqtt.get("url", "")
        self.prefix = self.mqtt.get("topic_prefix") or DEFAULT_PREFIX
        self.keepalive_s = keepalive_s or DEFAULT_KEEPALIVE_S
        self.refused = False  # the broker keeps refusing our credentials: reconnecting will not help
        self._conn: MqttConnection | None = None
        self._queue: asyncio.Queue[agent_pb2.HubMessage | None] = asyncio.Queue()
        self._window = MAX_UNACKED_PUBLISHES
        self._drained = asyncio.Event()
        self._drained.set()
        self._connected = False
        self._closed_reason = ""
        self._topics: dict[str, str] = {}  # kind -> this device's topic, set by open()

    def _topic(self, kind: str) -> str:
        return self._topics[kind]

    # ---- connection callbacks (on the loop) ----

    def _on_close(self, reason: str) -> None:
        self._connected = False
        self._closed_reason = reason
        self._queue.put_nowait(None)  # wakes incoming()
        self._drained.set()

    def _on_message(self, message: Message) -> None:
        try:
            hub_message = agent_pb2.HubMessage.FromString(message.payload)
        except Exception:  # DecodeError: not ours; a broken message must not end the session
            return
        self._queue.put_nowait(hub_message)

    def _on_puback(self, packet_id: int, reason: int) -> None:
        if self._conn is not None and len(self._conn.unacked) < self._window // 2:
            self._drained.set()

    # ---- Link ----

    async def open(self, hello: agent_pb2.Hello) -> agent_pb2.Welcome:
        """Connect to the broker, subscribe, publish Hello and return the hub's Welcome; LinkClosed on failure."""
        device = self.identity.device_id
        if not self.mqtt.get("username"):
            self.refused = True
            raise LinkClosed(f"device {device} has no MQTT credentials (the hub had no --mqtt when it enrolled)")
        if not self.broker:
            raise LinkClosed("no MQTT broker URL (give --broker)")
        try:
            address = parse_broker_url(self.broker, insecure=self.insecure)
        except BrokerUrlError as exc:
            self.refused = True  # the same URL next time: retrying cannot help
            raise LinkClosed(f"MQTT broker URL {exc}") from None
        host, port = address.host, address.port
        tls = None
        if address.tls:
            try:
                ca_pem = self.ca_file.read_bytes() if self.ca_file is not None else b""
            except OSError as exc:
                raise LinkClosed(f"MQTT broker {address.url}: cannot read the hub CA {self.ca_file}: {exc}") from None
            if not ca_pem:
                self.refused = True
                raise LinkClosed(f"MQTT broker {address.url}: no hub CA to check its certificate against")
            tls = client_tls_context(ca_pem)
        try:
            topics = Topics(self.prefix)
        except ValueError as exc:  # the hub's enrollment answer names the prefix
            self.refused = True
            raise LinkClosed(f"enrolled MQTT settings: {exc}") from None
        self._topics = {kind: topics.of(kind, device) for kind in (DESIRED, INBOX, REPORTED, ONLINE)}
        conn = MqttConnection(self._on_message, self._on_puback, self._on_close)
        self._conn = conn
        try:
            params = Connect(
                client_id=device, keepalive_s=self.keepalive_s, username=self.mqtt["username"],
                password=self.mqtt.get("password", ""), will=Will(self._topic(ONLINE), OFFLINE_PAYLOAD),
                clean_start=False, session_expiry_s=SESSION_EXPIRY_S,
            )  # fmt: skip
            connack = await conn.open(host, port, params, timeout_s=OPEN_TIMEOUT_S, tls=tls)
        except (OSError, TimeoutError) as exc:
            await self.close()
            raise LinkClosed(
                f"MQTT broker {host}:{port}: {getattr(exc, 'strerror', None) or exc or 'timed out'}"
            ) from None
        if connack.reason != 0:
            await self.close()
            if connack.reason in _AUTH_FAILURES:
                first = _refusals.setdefault(device, time.monotonic())
                self.refused = time.monotonic() - first >= REFUSED_GIVE_UP_S
            raise LinkClosed(f"MQTT broker {host}:{port} refused the connection: {reason_name(connack.reason)}")
        _refusals.pop(device, None)
        self._connected = True
        self._window = min(MAX_UNACKED_PUBLISHES, conn.receive_maximum)
        early: list[agent_pb2.HubMessage] = []  # e.g. the retained desired state, arriving before the Welcome
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                wanted = [self._topic(DESIRED), self._topic(INBOX)]
                # Subscribed before Hello goes out, so the Welcome cannot miss us.
                granted = await conn.subscribe([(t, 1) for t in wanted])
                refused = [(t, code) for t, code in zip(wanted, granted, strict=False) if code >= 0x80]
                if refused:
                    raise LinkClosed(f"MQTT broker refused the subscription to {refused[0][0]}: "
                                     f"{reason_name(refused[0][1])}")  # fmt: skip
                conn.publish(self._topic(ONLINE), ONLINE_PAYLOAD, qos=1, retain=True)
                conn.publish(self._topic(REPORTED), agent_pb2.AgentMessage(seq=0, hello=hello).SerializeToString())
                while True:
                    message = await self._queue.get()
                    if message is None:
                        raise LinkClosed(f"MQTT broker closed the session: {self._closed_reason}")
                    if message.HasField("welcome"):
                        break
                    early.append(message)
        except TimeoutError:
            await self.close()
            raise LinkClosed(
                f"no Welcome from the hub within {OPEN_TIMEOUT_S:g}s (is the hub's MQTT bridge up?)"
            ) from None
        except (LinkClosed, ConnectionError) as exc:
            await self.close()
            raise LinkClosed(str(exc) if isinstance(exc, LinkClosed) else f"MQTT session ended: {exc}") from None
        for m in early:
            self._queue.put_nowait(m)
        return message.welcome

    async def send(self, message: agent_pb2.AgentMessage) -> None:
        """Publish one AgentMessage (QoS 1); waits while too many await PUBACK; LinkClosed when disconnected."""
        conn = self._conn
        while self._connected and conn is not None and len(conn.unacked) >= self._window:
            self._drained.clear()
            await self._drained.wait()
        if not self._connected or conn is None:
            raise LinkClosed(f"MQTT session ended: {self._closed_reason or 'not open'}")
        try:
            conn.publish(self._topic(REPORTED), message.SerializeToString(), qos=1)
        except ConnectionError as exc:
            raise LinkClosed(f"MQTT session ended: {exc}") from None

    async def incoming(self) -> AsyncIterator[agent_pb2.HubMessage]:
        """HubMessages as they arrive; raises LinkClosed when the session ends."""
        while True:
            message = await self._queue.get()
            if message is None:
                raise LinkClosed(f"MQTT session ended: {self._closed_reason or 'disconnected'}")
            if message.HasField("welcome"):  # a repeated Welcome (QoS 1 redelivery) carries nothing new
                continue
            yield message

    async def close(self) -> None:
        """Say 'offline' (retained) and disconnect cleanly, so no Last Will fires; idempotent."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._connected and conn.is_open:
            conn.publish(self._topic(ONLINE), OFFLINE_PAYLOAD, qos=1, retain=True)
        await conn.close()  # DISCONNECT goes after the queued publishes
        self._connected = False
        self._queue.put_nowait(None)
