"""The hub's one MQTT connection to the broker, on an event loop in a thread of its own.

The hub's other threads (the group-commit writer sending acks, the desired-state sync worker)
hand their publishes over with `post`, one wake-up of the loop per burst. Desired states go out
through a window: at most PUBLISH_WINDOW of them (and at most the broker's Receive Maximum) await
their PUBACK at once, so a 10,000-device rollout flows at the broker's pace instead of queuing
in the socket. Welcomes and acks made while the broker is away are held (up to HELD_MAX) and
sent on reconnect; desired states that were in flight are reported lost, for the front to sync
again. Reconnects back off up to RECONNECT_MAX_S.

The connection is protos/mqtt/connection.py. It was paho: py-spy over a 10,000-device rollout
showed paho's network thread busy ~80% of the time with the devices' reports (a message-info
object and a lock per packet), and the PUBACKs the rollout waited for queued behind them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import ssl
import threading
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from hub import event_loop
from hub.errors import HubError
from protos.mqtt import Connect, Message, MqttConnection, reason_name

log = logging.getLogger("hub.control.mqtt")

HUB_CLIENT_ID = "_edgeport-hub"
SESSION_EXPIRY_S = 7 * 24 * 3600
# The sync worker's QoS 1 publishes awaiting the broker's PUBACK, at most (and at most the broker's Receive
# Maximum). With a window of 100 a 10,000-device rollout went out at 100 per broker round trip.
PUBLISH_WINDOW = 1000
RECONNECT_MAX_S = 30.0
HELD_MAX = 20_000  # Welcomes and acks kept while the broker is away (a fleet's worth)


class Outgoing(NamedTuple):
    """One PUBLISH handed to the loop; `device` is set for the sync worker's desired states (windowed)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    device: str | None = None


class BrokerClient:
    """The hub's MQTT connection: connect, subscribe, reconnect, and publish from any thread."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        password: str,
        keepalive_s: int,
        subscriptions: list[tuple[str, int]],
        on_message: Callable[[Message], None],
        on_lost: Callable[[list[str]], None],
        stats: dict[str, int],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`tls`: MQTT over TLS, the broker checked by that context.

        `on_message` runs on the loop thread for each message; `on_lost` gets the devices whose desired
        states were not acknowledged when the connection ended (before the reconnect); `stats` is counted into
        (desired_published, inflight_peak)."""
        self.host, self.port = host, port
        self.tls = tls
        self.username, self.password = username, password
        self.keepalive_s = keepalive_s
        self.subscriptions = subscriptions
        self.on_message = on_message
        self.on_lost = on_lost
        self.stats = stats
        self._lock = threading.Lock()
        self._stopping = False
        # The loop's side: only its thread touches these (other threads go through post).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._conn: MqttConnection | None = None
        self._windowed: deque[Outgoing] = deque()  # desired states waiting for room in the window
        self._held: deque[Outgoing] = deque(maxlen=HELD_MAX)  # other publishes made while disconnected
        self._inflight: dict[int, Outgoing] = {}  # packet id -> windowed publish awaiting its PUBACK
        self._window = PUBLISH_WINDOW  # lowered to the broker's Receive Maximum on connect
        self._paused = False  # reading stopped while the store is behind
        self._posted: deque[Outgoing] = deque()  # handed over by other threads, not yet taken by the loop
        self._drain_scheduled = False

    @property
    def connected(self) -> bool:
        """Whether the connection is up (it is being re-made otherwise)."""
        return self._conn is not None

    # ---- lifecycle ----

    def start(self, timeout: float) -> None:
        """Start the loop thread and connect (blocking up to `timeout`); HubError says why not."""
        loop = event_loop.loop_factory()()
        self._loop = loop
        self._loop_thread = threading.Thread(target=loop.run_forever, name="mqtt-front", daemon=True)
        self._loop_thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._connect(timeout), loop).result(timeout + 1)
        except (HubError, concurrent.futures.TimeoutError) as exc:
            self._stop_loop()
            if isinstance(exc, HubError):
                raise
            raise HubError(f"MQTT broker {self.host}:{self.port} did not accept the hub: no CONNACK") from None

    def stop(self) -> None:
        """Send what was handed over, disconnect (no reconnect), and stop the loop thread."""
        self._stopping = True
        if self._loop is not None and self._loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._disconnect(), self._loop).result(5)
        self._stop_loop()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._loop_thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        if not thread.is_alive():
            loop.close()

    async def _connect(self, timeout: float) -> None:
        """Open the connection, check the CONNACK and the SUBACK; HubError says why not."""
        conn = MqttConnection(self.on_message, self._on_puback, lambda reason: self._on_close(conn, reason))
        params = Connect(HUB_CLIENT_ID, self.keepalive_s, self.username, self.password, clean_start=False,
                         session_expiry_s=SESSION_EXPIRY_S)  # fmt: skip
        where = f"{self.host}:{self.port}"
        try:
            connack = await conn.open(self.host, self.port, params, timeout, tls=self.tls)
            if connack.reason != 0:
                raise HubError(f"MQTT broker {where} did not accept the hub: {reason_name(connack.reason)}")
            # Ours from here: with a persistent session the broker delivers what it kept for us right away,
            # before the SUBACK, and the Welcomes those Hellos ask for must go out on this connection.
            self._conn = conn
            self._window = min(PUBLISH_WINDOW, conn.receive_maximum)
            self._send_held()
            granted = await conn.subscribe(self.subscriptions)
            refused = [reason_name(code) for code in granted if code >= 0x80]
            if refused:
                raise HubError(f"MQTT broker {where} refused the hub's subscriptions: {', '.join(refused)}")
        except BaseException as exc:
            if self._conn is conn:
                self._conn = None  # a connection that failed to open is not one to reconnect
            conn.abort()
            if isinstance(exc, OSError):
                raise HubError(f"cannot reach the MQTT broker at {where}: {exc.strerror or exc}") from None
            if isinstance(exc, TimeoutError):
                raise HubError(f"MQTT broker {where} did not accept the hub: no CONNACK") from None
            raise
        log.info("MQTT bridge connected to %s (session present: %s)", where, connack.session_present)
        self._fill_window()

    async def _disconnect(self) -> None:
        self._drain()  # acks handed over just before the stop
        if self._conn is not None:
            await self._conn.close()

    def _on_close(self, conn: MqttConnection, reason: str) -> None:
        """The connection ended (loop thread): what was not acknowledged is synced again after a reconnect."""
        if conn is not self._conn:
            return
        self._conn = None
        self._paused = False
        lost = [item.device for item in (*self._inflight.values(), *self._windowed) if item.device]
        self._inflight.clear()
        self._windowed.clear()
        if self._stopping:
            return
        log.warning("MQTT bridge lost the broker (%s); reconnecting", reason)
        self.on_lost(lost)
        assert self._loop is not None
        self._loop.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 1.0
        while not self._stopping:
            await asyncio.sleep(delay)
            try:
                await self._connect(timeout=30.0)
                return
            except HubError as exc:
                log.warning("%s; trying again in %gs", exc, min(delay * 2, RECONNECT_MAX_S))
                delay = min(delay * 2, RECONNECT_MAX_S)

    # ---- reading ----

    def pause_reading(self) -> None:
        """(Loop thread) Stop reading: the broker holds the rest (TCP backpressure, QoS 1) until resume_soon."""
        if not self._paused and self._conn is not None:
            self._paused = True
            self._conn.pause_reading()

    def resume_soon(self) -> None:
        """(Any thread) Read again."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._resume_reading)

    def _resume_reading(self) -> None:
        if self._paused and self._conn is not None:
            self._paused = False
            self._conn.resume_reading()

    # ---- publishing ----

    def post(self, item: Outgoing) -> None:
        """Hand a PUBLISH to the loop (any thread); one wake-up of the loop per burst."""
        with self._lock:
            self._posted.append(item)
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile: we are stopping
                loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            items = list(self._posted)
            self._posted.clear()
            self._drain_scheduled = False
        conn = self._conn
        for item in items:
            if item.device is not None:
                self._windowed.append(item)
            elif conn is not None and conn.is_open:
                conn.publish(item.topic, item.payload, qos=item.qos, retain=item.retain)
            else:  # Welcomes and acks wait for the connection (the oldest go past HELD_MAX: their resend covers)
                self._held.append(item)
        self._fill_window()

    def _send_held(self) -> None:
        conn = self._conn
        while self._held and conn is not None and conn.is_open:
            item = self._held.popleft()
            conn.publish(item.topic, item.payload, qos=item.qos, retain=item.retain)

    def _fill_window(self) -> None:
        conn = self._conn
        if conn is None or not conn.is_open:
            return
        while self._windowed and len(self._inflight) < self._window:
            item = self._windowed.popleft()
            self._inflight[conn.publish(item.topic, item.payload, qos=1, retain=True)] = item
            self.stats["desired_published"] += 1
        self.stats["inflight_peak"] = max(self.stats["inflight_peak"], len(self._inflight))

    def _on_puback(self, packet_id: int, reason: int) -> None:
        item = self._inflight.pop(packet_id, None)
        if item is not None and reason >= 0x80:
            log.warning("the broker refused the desired state of %s: %s", item.device, reason_name(reason))
        self._fill_window()
