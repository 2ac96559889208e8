"""MqttConnection: one MQTT 5 client connection, as an asyncio (buffered) Protocol on the running loop.

Why not paho: a simulated fleet runs thousands of agents on one event loop and an edge device
has a core to spare at best. paho builds a message-info object with its own lock for every
packet and matches every topic against callbacks; sampled with py-spy over a 10,000-agent
deploy and telemetry, that was about 45% of the fleet processes' Python time. Agent and hub
need a small part of MQTT 5 (protos/mqtt/codec.py): here every packet written in one
loop turn goes out in one write, whatever arrived in one read is handled in one pass, and
keep-alive is one timer per connection. Kept over a maintained asyncio MQTT 5 client as measured:
gmqtt 0.8 (benchmarks/mqtt_clients.py) took deploy fleet CPU x0.98 at 1,000 agents, x1.14 at 2,000, x1.30 at 10,000.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
import threading
import time
from collections.abc import Callable
from typing import cast

from protos.mqtt import codec
from protos.mqtt.codec import Connack, Connect, Message, ProtocolError, reason_name

MessageHandler = Callable[[Message], None]
PubackHandler = Callable[[int, int], None]  # (packet id, reason code)
CloseHandler = Callable[[str], None]  # why the connection ended
READ_BUFFER_BYTES = 64 * 1024
# Keep-alive deadlines are rounded up to this grain, so that the pings of the many connections sharing one
# loop (a simulated fleet) fire in the same loop turn rather than waking the loop once each.
TIMER_GRAIN_S = 0.25


def _call_later(loop: asyncio.AbstractEventLoop, delay: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
    """`loop.call_later`, its deadline rounded up to TIMER_GRAIN_S."""
    return loop.call_at(math.ceil((loop.time() + delay) / TIMER_GRAIN_S) * TIMER_GRAIN_S, callback)


class _ReadBuffer(threading.local):
    """Where sockets are read into: one per thread (so per event loop), shared by its connections, since what
    arrives is copied into the connection's PacketReader at once. A plain Protocol makes asyncio allocate a
    256 KiB buffer per read, which glibc maps and unmaps every time (three system calls a read)."""

    def __init__(self) -> None:
        self.view = memoryview(bytearray(READ_BUFFER_BYTES))


_read_buffer = _ReadBuffer()


class MqttConnection(asyncio.BufferedProtocol):
    """One client connection to an MQTT 5 broker (QoS 0/1 publish and subscribe, keep-alive, Last Will).

    `on_message` gets each PUBLISH received (QoS 1 ones are acknowledged after it returns),
    `on_puback` each acknowledgement of ours, `on_close` the reason once the connection ended.
    """

    def __init__(
        self,
        on_message: MessageHandler,
        on_puback: PubackHandler | None = None,
        on_close: CloseHandler | None = None,
    ) -> None:
        self.on_message = on_message
        self.on_puback = on_puback
        self.on_close = on_close
        self.unacked: set[int] = set()  # ids of our QoS 1 publishes waiting for PUBACK
        self.receive_maximum = 65535  # QoS 1 publishes the broker accepts unacknowledged (from CONNACK)
        self.reason = ""  # why the connection ended (empty while open)
        self._reader = codec.PacketReader()
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connack: asyncio.Future[Connack] | None = None
        self._subacks: dict[int, asyncio.Future[list[int]]] = {}
        self._closed: asyncio.Future[None] | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._next_id = 0
        self._keepalive_s = 0
        self._timer: asyncio.TimerHandle | None = None
        self._ping_sent_at = 0.0  # monotonic time of the unanswered PINGREQ, 0 when none
        self._heard_at = 0.0  # monotonic time of the last bytes from the broker
        self._reading_paused = False

    # ---- opening and closing ----

    async def open(
        self, host: str, port: int, params: Connect, timeout_s: float = 15.0, *, tls: ssl.SSLContext | None = None
    ) -> Connack:
        """Connect and send CONNECT with `params`; the broker's CONNACK (reason 0: accepted; otherwise it closes).

        With `tls` the connection is MQTT over TLS, the broker's certificate checked by that context (host
        name `host`). Raises OSError when the broker cannot be reached (ssl.SSLError, an OSError, when its
        certificate does not verify), TimeoutError when it does not answer in time.
        """
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._connack = loop.create_future()
        self._closed = loop.create_future()
        try:
            async with asyncio.timeout(timeout_s):
                await loop.create_connection(lambda: self, host, port, ssl=tls)
                self._send(codec.connect(params))
                connack = await self._connack
        except BaseException:
            self.abort()
            raise
        if connack.reason == 0:
            props = connack.properties
            server_keepalive = props.get(codec.SERVER_KEEP_ALIVE)
            self._keepalive_s = server_keepalive if isinstance(server_keepalive, int) else params.keepalive_s
            receive_maximum = props.get(codec.RECEIVE_MAXIMUM)
            if isinstance(receive_maximum, int) and receive_maximum > 0:
                self.receive_maximum = receive_maximum
            if self._keepalive_s > 0:
                self._timer = _call_later(loop, self._keepalive_s, self._keepalive)
        return connack

    @property
    def is_open(self) -> bool:
        """Whether the connection is up (CONNACK may still be pending)."""
        return self._transport is not None and not self.reason

    async def close(self, timeout_s: float = 2.0) -> None:
        """Send DISCONNECT (normal: the broker drops our Will) after what is queued, and close; idempotent."""
        if self.is_open and self._transport is not None:
            self._send(codec.disconnect())
            self._flush()
            self._transport.close()  # asyncio writes what is buffered first
            if self._closed is not None and not self._closed.done():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout_s):
                        await asyncio.shield(self._closed)
        self.abort()

    def pause_reading(self) -> None:
        """Stop reading from the broker (backpressure: it keeps what it has for us) until resume_reading."""
        if self._transport is not None and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Read from the broker again."""
        if self._transport is not None and self._reading_paused:
            self._reading_paused = False
            self._heard_at = time.monotonic()  # its PINGRESP may have waited unread meanwhile
            self._transport.resume_reading()

    def abort(self) -> None:
        """Drop the connection at once (no DISCONNECT: the broker publishes our Will)."""
        if self._transport is not None:
            self._transport.abort()

    # ---- sending ----

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        """Queue a PUBLISH; its packet id (0 at QoS 0). ConnectionError when the connection is gone."""
        if not self.is_open:
            raise ConnectionError(self.reason or "not connected")
        packet_id = self._new_id() if qos else 0
        if qos:
            self.unacked.add(packet_id)
        self._send(codec.publish(topic, payload, qos=qos, retain=retain, packet_id=packet_id))
        return packet_id

    def subscribe(self, filters: list[tuple[str, int]]) -> asyncio.Future[list[int]]:
        """Send SUBSCRIBE; a future of the broker's reason codes, one per filter (0x80 and up: refused)."""
        if not self.is_open or self._loop is None:
            raise ConnectionError(self.reason or "not connected")
        packet_id = self._new_id()
        granted: asyncio.Future[list[int]] = self._loop.create_future()
        self._subacks[packet_id] = granted
        self._send(codec.subscribe(packet_id, filters))
        return granted

    def _new_id(self) -> int:
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self.unacked and self._next_id not in self._subacks:
                return self._next_id
        raise ConnectionError("65,535 packets await acknowledgement")

    def _send(self, packet: bytes) -> None:
        # One write per loop turn for everything queued in it (publishes of a burst, PUBACKs of a read).
        self._out.append(packet)
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(self._out))
        self._out.clear()

    # ---- keep-alive ----

    def _keepalive(self) -> None:
        if not self.is_open or self._loop is None:
            return
        now = time.monotonic()
        if self._ping_sent_at and self._heard_at < self._ping_sent_at and not self._reading_paused:
            self._fail(f"the broker did not answer within the keep-alive ({self._keepalive_s}s)")
            return
        self._send(codec.PINGREQ_PACKET)
        self._ping_sent_at = now
        self._timer = _call_later(self._loop, self._keepalive_s, self._keepalive)

    # ---- asyncio.Protocol ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # a stream transport (uvloop's is no subclass)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _read_buffer.view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_read_buffer.view[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        """Handle what arrived: every packet it completes, in order."""
        self._heard_at = time.monotonic()
        try:
            for kind, flags, body in self._reader.feed(data):
                self._handle(kind, flags, body)
        except ProtocolError as exc:
            self._fail(f"broker sent a malformed packet: {exc}")

    def _handle(self, kind: int, flags: int, body: bytes) -> None:
        if kind == codec.PUBLISH:
            message = codec.parse_publish(flags, body)
            self.on_message(message)
            if message.qos:
                self._send(codec.puback(message.packet_id))
        elif kind == codec.PUBACK:
            packet_id, (reason,) = codec.parse_ack("PUBACK", body)
            self.unacked.discard(packet_id)
            if self.on_puback is not None:
                self.on_puback(packet_id, reason)
        elif kind == codec.SUBACK:
            packet_id, reasons = codec.parse_ack("SUBACK", body)
            granted = self._subacks.pop(packet_id, None)
            if granted is not None and not granted.done():
                granted.set_result(reasons)
        elif kind == codec.PINGRESP:
            self._ping_sent_at = 0.0
        elif kind == codec.CONNACK:
            if self._connack is None or self._connack.done():
                raise ProtocolError("a second CONNACK")
            self._connack.set_result(codec.parse_connack(body))
        elif kind == codec.DISCONNECT:
            reason, text = codec.parse_disconnect(body)
            self._fail(f"broker disconnected us: {reason_name(reason)}{f' ({text})' if text else ''}")
        else:
            raise ProtocolError(f"unexpected packet type {kind}")

    def _fail(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.reason = self.reason or (f"connection lost: {exc}" if exc else "the broker closed the connection")
        self._transport = None
        self._out.clear()
        if self._timer is not None:
            self._timer.cancel()
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(ConnectionError(self.reason))
            self._connack.exception()  # retrieved here: open() may already have given up on it
        for granted in self._subacks.values():
            if not granted.done():
                granted.set_exception(ConnectionError(self.reason))
                granted.exception()
        self._subacks.clear()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        if self.on_close is not None:
            self.on_close(self.reason)
