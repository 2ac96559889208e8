"""The MQTT Link: the same protobuf messages as the gRPC stream, through a broker (MQTT 5, paho-mqtt).

Topics, under the prefix the hub gave at enrollment (the hub's hub/control/mqtt_topics.py
is the other half of this contract; a test keeps the two equal):

    {prefix}/{device}/desired   in   HubMessage(desired), retained: a device that connects late gets it at once
    {prefix}/{device}/inbox     in   HubMessage (welcome, acks, requests)
    {prefix}/{device}/reported  out  AgentMessage (hello, status, telemetry, heartbeats...)
    {prefix}/{device}/online    out  "online" retained; Last Will "offline", retained

Everything is QoS 1 on a persistent session (clean start off, long session expiry), so
what the hub sends while the device is away is queued by the broker. `open` publishes
Hello and waits for the hub's Welcome on the inbox, like the gRPC stream's first exchange.

paho is driven from the asyncio loop (socket readiness -> loop_read/loop_write, one shared
1 s tick -> loop_misc for keep-alives), not from a thread per client, so a simulated fleet
can run thousands of links on one loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.link.base import LinkClosed
from agent.state import Identity
from protos.edgeport.v1 import agent_pb2

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

DESIRED, INBOX, REPORTED, ONLINE = "desired", "inbox", "reported", "online"
ONLINE_PAYLOAD, OFFLINE_PAYLOAD = b"online", b"offline"


def topic(prefix: str, device: str, kind: str) -> str:
    """`{prefix}/{device}/{kind}`: the per-device topic layout shared with the hub."""
    return f"{prefix}/{device}/{kind}"


class _LoopDriver:
    """Runs paho clients on one asyncio loop: readers/writers on their sockets plus a shared misc tick."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.clients: set[mqtt.Client] = set()
        self._tick: asyncio.Task[None] | None = None
        self._writing: set[mqtt.Client] = set()  # clients with a write already scheduled on the loop

    def attach(self, client: mqtt.Client) -> None:
        client.on_socket_open = self._on_open
        client.on_socket_close = self._on_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self.clients.add(client)
        if self._tick is None or self._tick.done():
            self._tick = self.loop.create_task(self._misc())

    def detach(self, client: mqtt.Client) -> None:
        self.clients.discard(client)

    def _on_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.loop.add_reader(sock, client.loop_read)

    def _on_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.loop.remove_reader(sock)
        self.loop.remove_writer(sock)

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        # The socket is almost always writable: write on the next loop turn (every packet queued meanwhile in
        # one go) and watch the socket only when the kernel buffer is full, rather than an epoll add and
        # remove for every publish and PUBACK.
        if client not in self._writing:
            self._writing.add(client)
            self.loop.call_soon(self._write, client, sock)

    def _write(self, client: mqtt.Client, sock: Any) -> None:
        self._writing.discard(client)
        if client.socket() is not sock:  # closed (or reconnected) meanwhile
            return
        client.loop_write()
        if client.socket() is sock and client.want_write():  # the kernel buffer is full: wait until writable
            self.loop.add_writer(sock, client.loop_write)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.loop.remove_writer(sock)

    async def _misc(self) -> None:
        while self.clients:
            for client in list(self.clients):
                client.loop_misc()  # keep-alive pings, and noticing a silent broker
            await asyncio.sleep(1.0)


_drivers: dict[asyncio.AbstractEventLoop, _LoopDriver] = {}


def _driver() -> _LoopDriver:
    loop = asyncio.get_running_loop()
    for old in [lp for lp in _drivers if lp.is_closed()]:
        del _drivers[old]
    if loop not in _drivers:
        _drivers[loop] = _LoopDriver(loop)
    return _drivers[loop]


def _parse_url(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise LinkClosed(f"broker URL {url!r}: expected mqtt://HOST:PORT")
    return parts.hostname, parts.port or 1883


class MqttLink:
    """One session through an MQTT broker (implements agent.link.base.Link)."""

    def __init__(self, identity: Identity, *, broker: str | None = None, keepalive_s: int | None = None) -> None:
        self.identity = identity
        self.mqtt = dict(identity.mqtt or {})
        self.broker = broker or self.mqtt.get("url", "")
        self.prefix = self.mqtt.get("topic_prefix") or "edgeport"
        self.keepalive_s = keepalive_s or DEFAULT_KEEPALIVE_S
        self.refused = False  # the broker keeps refusing our credentials: reconnecting will not help
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connack: asyncio.Future[int] | None = None
        self._queue: asyncio.Queue[agent_pb2.HubMessage | None] = asyncio.Queue()
        self._unacked: set[int] = set()
        self._drained = asyncio.Event()
        self._drained.set()
        self._connected = False
        self._closed_reason = ""

    def _topic(self, kind: str) -> str:
        return topic(self.prefix, self.identity.device_id, kind)

    # ---- paho callbacks (all on the loop: the driver calls loop_read/loop_write/loop_misc there) ----

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(int(reason.value) if hasattr(reason, "value") else int(reason))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._connected = False
        self._closed_reason = str(reason)
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(int(reason.value) if hasattr(reason, "value") and reason.value else 0x80)
        self._queue.put_nowait(None)  # wakes incoming()
        self._unacked.clear()
        self._drained.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            hub_message = agent_pb2.HubMessage.FromString(message.payload)
        except Exception:  # DecodeError: not ours; a broken message must not end the session
            return
        self._queue.put_nowait(hub_message)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self._unacked.discard(mid)
        if len(self._unacked) < MAX_UNACKED_PUBLISHES // 2:
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
        host, port = _parse_url(self.broker)
        self._loop = asyncio.get_running_loop()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device, protocol=mqtt.MQTTv5)
        client.username_pw_set(self.mqtt["username"], self.mqtt.get("password", ""))
        client.will_set(self._topic(ONLINE), OFFLINE_PAYLOAD, qos=1, retain=True)
        client.max_queued_messages_set(0)
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.connect_timeout = 5.0
        self._client = client
        driver = _driver()
        driver.attach(client)
        self._connack = self._loop.create_future()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        try:
            client.connect(host, port, keepalive=self.keepalive_s, clean_start=False, properties=props)
            code = await asyncio.wait_for(self._connack, OPEN_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            await self.close()
            raise LinkClosed(
                f"MQTT broker {host}:{port}: {getattr(exc, 'strerror', None) or exc or 'timed out'}"
            ) from None
        if code != 0:
            await self.close()
            if code in _AUTH_FAILURES:
                first = _refusals.setdefault(device, time.monotonic())
                self.refused = time.monotonic() - first >= REFUSED_GIVE_UP_S
            reason = mqtt.ReasonCode(PacketTypes.CONNACK, identifier=code)
            raise LinkClosed(f"MQTT broker {host}:{port} refused the connection: {reason}")
        _refusals.pop(device, None)
        self._connected = True
        client.subscribe([(self._topic(DESIRED), 1), (self._topic(INBOX), 1)])
        client.publish(self._topic(ONLINE), ONLINE_PAYLOAD, qos=1, retain=True)
        client.publish(self._topic(REPORTED), agent_pb2.AgentMessage(seq=0, hello=hello).SerializeToString(), qos=1)
        early: list[agent_pb2.HubMessage] = []  # e.g. the retained desired state, arriving before the Welcome
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_S):
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
        except LinkClosed:
            await self.close()
            raise
        for m in early:
            self._queue.put_nowait(m)
        return message.welcome

    async def send(self, message: agent_pb2.AgentMessage) -> None:
        """Publish one AgentMessage (QoS 1); waits while too many await PUBACK; LinkClosed when disconnected."""
        while self._connected and len(self._unacked) >= MAX_UNACKED_PUBLISHES:
            self._drained.clear()
            await self._drained.wait()
        if not self._connected or self._client is None:
            raise LinkClosed(f"MQTT session ended: {self._closed_reason or 'not open'}")
        info = self._client.publish(self._topic(REPORTED), message.SerializeToString(), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise LinkClosed(f"MQTT publish failed: {mqtt.error_string(info.rc)}")
        self._unacked.add(info.mid)

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
        client, self._client = self._client, None
        if client is None:
            return
        if self._connected:
            client.publish(self._topic(ONLINE), OFFLINE_PAYLOAD, qos=1, retain=True)
        if client.socket() is not None:
            client.disconnect()  # paho writes DISCONNECT after the queued publishes, then closes the socket
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    while client.socket() is not None:
                        await asyncio.sleep(0.02)
        self._connected = False
        _driver().detach(client)
        self._queue.put_nowait(None)
