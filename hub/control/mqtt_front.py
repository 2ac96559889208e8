"""The MQTT front: the hub as one MQTT 5 client of the broker, driving the transport-independent core.

    device publishes Hello on {prefix}/{d}/reported  -> core.open_session; Welcome on {prefix}/{d}/inbox
    any other AgentMessage on .../reported           -> core.submit (group commit, dedup by (device, seq));
                                                        after the commit, a cumulative Ack on .../inbox (QoS 0)
    core says device d changed (any thread)          -> its DesiredState retained (QoS 1) on .../desired
    "offline" on .../online (Last Will or goodbye)   -> core.close_session (device offline)

The broker's ACL guarantees a message on `{prefix}/{d}/reported` comes from device d, so
the topic names the device. A message from a device with no session (the hub restarted
while the device stayed connected to the broker) opens one implicitly: nothing is lost.
The hub's own session is persistent, so reports published while the hub is down wait in
the broker.

The connection is the agent's own MQTT client (agent/link/mqtt_connection.py) on an event
loop in a thread of its own. It was paho: py-spy over a 10,000-device rollout showed paho's
network thread busy ~80% of the time with the devices' reports (a message-info object and a
lock per packet), and the PUBACKs the rollout waited for queued behind them. Change
notifications are coalesced into a dirty set that one worker thread syncs (level-triggered,
like a controller): it reads desired states from the store and hands the publishes to the
loop, which keeps at most a window of them unacknowledged.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from hub import event_loop
from hub.control.core import ControlCore, Session
from hub.errors import HubError
from protos.edgeport.v1 import agent_pb2
from protos.mqtt import OFFLINE_PAYLOAD, ONLINE, REPORTED, Connect, Message, MqttConnection, Topics, reason_name

log = logging.getLogger("hub.control.mqtt")

HUB_CLIENT_ID = "_edgeport-hub"
SESSION_EXPIRY_S = 7 * 24 * 3600
SYNC_CHUNK = 500  # devices whose desired state is read and published per pass of the sync worker
# The sync worker's QoS 1 publishes awaiting the broker's PUBACK, at most (and at most the broker's Receive
# Maximum). With a window of 100 a 10,000-device rollout went out at 100 per broker round trip.
PUBLISH_WINDOW = 1000
RECONNECT_MAX_S = 30.0
HELD_MAX = 20_000  # Welcomes and acks kept while the broker is away (a fleet's worth)


class _Outgoing(NamedTuple):
    """One PUBLISH handed to the loop; `device` is set for the sync worker's desired states (windowed)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    device: str | None = None


class MqttFront:
    """Connects to the broker as the hub and bridges devices' topics to the core."""

    def __init__(
        self,
        core: ControlCore,
        topics: Topics,
        *,
        host: str,
        port: int,
        username: str,
        password: str,
        is_active: Callable[[str], bool],
        on_revoked: Callable[[str], None] = lambda device_id: None,
        keepalive_s: int = 30,
    ) -> None:
        self.core = core
        self.topics = topics
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.is_active = is_active
        self.on_revoked = on_revoked
        self.keepalive_s = keepalive_s
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._published: dict[str, int] = {}  # device -> DesiredState revision retained on the broker
        self._dirty: set[str] = set()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._worker: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.stats = {"received": 0, "acks": 0, "desired_published": 0, "inflight_peak": 0}
        # The loop's side: only its thread touches these (other threads go through _post).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._conn: MqttConnection | None = None
        self._windowed: deque[_Outgoing] = deque()  # desired states waiting for room in the window
        self._held: deque[_Outgoing] = deque(maxlen=HELD_MAX)  # other publishes made while disconnected
        self._inflight: dict[int, _Outgoing] = {}  # packet id -> windowed publish awaiting its PUBACK
        self._window = PUBLISH_WINDOW  # lowered to the broker's Receive Maximum on connect
        self._paused = False  # reading stopped while the store is behind
        self._posted: deque[_Outgoing] = deque()  # handed over by other threads, not yet taken by the loop
        self._drain_scheduled = False

    # ---- lifecycle ----

    def start(self, timeout: float = 60.0) -> None:
        """Connect (blocking up to `timeout`), subscribe, and start syncing desired states; HubError if refused.

        The wait is long because a broker busy with a fleet (10,000 sessions reconnecting or expiring
        after a hub restart) can take tens of seconds to answer one more CONNECT.
        """
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
        self.core.on_drained(self._drained)
        self._unsubscribe = self.core.add_listener(self.mark_dirty)
        self._worker = threading.Thread(target=self._sync_loop, name="mqtt-desired", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        """Stop syncing, close every MQTT session in the core, disconnect."""
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
            sessions, self._sessions = list(self._sessions.values()), {}
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._worker is not None:
            self._worker.join(5)
        for session in sessions:
            self.core.close_session(session)
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
        conn = MqttConnection(self._on_message, self._on_puback, lambda reason: self._on_close(conn, reason))
        params = Connect(HUB_CLIENT_ID, self.keepalive_s, self.username, self.password, clean_start=False,
                         session_expiry_s=SESSION_EXPIRY_S)  # fmt: skip
        where = f"{self.host}:{self.port}"
        try:
            connack = await conn.open(self.host, self.port, params, timeout)
            if connack.reason != 0:
                raise HubError(f"MQTT broker {where} did not accept the hub: {reason_name(connack.reason)}")
            # Ours from here: with a persistent session the broker delivers what it kept for us right away,
            # before the SUBACK, and the Welcomes those Hellos ask for must go out on this connection.
            self._conn = conn
            self._window = min(PUBLISH_WINDOW, conn.receive_maximum)
            self._send_held()
            granted = await conn.subscribe([(self.topics.all(REPORTED), 1), (self.topics.all(ONLINE), 1)])
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
        with self._lock:
            stopping = self._stopping
            for device in lost:
                self._published.pop(device, None)
        if stopping:
            return
        log.warning("MQTT bridge lost the broker (%s); reconnecting", reason)
        self.sync_all(lost)
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

    # ---- the loop's publishing ----

    def _post(self, item: _Outgoing) -> None:
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

    # ---- device -> hub (loop thread) ----

    def _on_message(self, message: Message) -> None:
        parsed = self.topics.parse(message.topic)
        if parsed is None:
            return
        device, kind = parsed
        try:
            if kind == REPORTED:
                self._reported(device, message.payload)
            elif kind == ONLINE and message.payload == OFFLINE_PAYLOAD:
                self._offline(device)
        except HubError as exc:  # one device's bad message is logged; the bridge goes on
            log.warning("device %s: message on %s refused: %s", device, message.topic, exc.message)
        except Exception:
            log.exception("device %s: handling a message on %s failed", device, message.topic)

    def _reported(self, device: str, payload: bytes) -> None:
        try:
            message = agent_pb2.AgentMessage.FromString(payload)
        except Exception:  # DecodeError: not an AgentMessage
            log.warning("device %s published something that is not an AgentMessage (%d bytes)", device, len(payload))
            return
        self.stats["received"] += 1
        if message.WhichOneof("body") == "hello":
            self._open(device, message.hello)
            return
        with self._lock:
            session = self._sessions.get(device)
        if session is None:  # the hub restarted (or the device was marked offline) mid-session
            session = self._open(device, agent_pb2.Hello())
            if session is None:
                return
        inbox = self.topics.inbox(device)

        def send_ack(ack: agent_pb2.HubMessage) -> None:  # group-commit writer thread, after the commit
            self.stats["acks"] += 1
            # QoS 0: an ack is cumulative, so a lost one is covered by the next, or by the Welcome's acked_seq
            # after a reconnect (the outbox resends what is unacked; the hub stores it once).
            self._post(_Outgoing(inbox, ack.SerializeToString(), 0))

        self.core.submit(session, message, send_ack)
        # While the hub is behind, stop reading: the broker holds the rest (TCP backpressure, QoS 1).
        if self.core.congested() and not self._paused and self._conn is not None:
            self._paused = True
            self._conn.pause_reading()

    def _drained(self) -> None:
        """Core callback (any thread): the store caught up; read again."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._resume_reading)

    def _resume_reading(self) -> None:
        if self._paused and self._conn is not None:
            self._paused = False
            self._conn.resume_reading()

    def _open(self, device: str, hello: agent_pb2.Hello) -> Session | None:
        if not self.is_active(device):
            log.warning("ignoring MQTT messages of device %s: not enrolled or revoked", device)
            return None
        session, welcome = self.core.open_session(device, hello, transport="mqtt")
        with self._lock:
            old = self._sessions.get(device)
            self._sessions[device] = session
        if old is not None:
            self.core.close_session(old)  # a no-op for presence: the new session is current
        log.info("device %s connected (mqtt)", device)
        reply = agent_pb2.HubMessage(sent_at_ms=_now_ms(), welcome=welcome)
        self._post(_Outgoing(self.topics.inbox(device), reply.SerializeToString(), 1))
        self._sync(device)
        return session

    def _offline(self, device: str) -> None:
        with self._lock:
            session = self._sessions.pop(device, None)
        if session is not None:
            self.core.close_session(session)
            log.info("device %s offline (mqtt)", device)

    # ---- hub -> device ----

    def mark_dirty(self, device_id: str) -> None:
        """Core listener (any thread): the device's desired state, requests or standing changed."""
        with self._lock:
            self._dirty.add(device_id)
            self._wake.notify()

    def sync_all(self, device_ids: list[str]) -> None:
        """Queue a sync of every given device (at start: retained desired states match the store)."""
        with self._lock:
            self._dirty.update(device_ids)
            self._wake.notify()

    def _sync_loop(self) -> None:
        while True:
            with self._lock:
                while not self._dirty and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                batch, self._dirty = self._dirty, set()
            devices = sorted(batch)
            # In chunks: the first devices of a 10,000-device rollout get theirs before the last are built.
            for i in range(0, len(devices), SYNC_CHUNK):
                chunk = devices[i : i + SYNC_CHUNK]
                try:
                    self._sync_many(chunk, windowed=True)
                except Exception:  # keep syncing the others; the next change retries these
                    log.exception("publishing desired states of %d device(s) failed", len(chunk))

    def _sync(self, device: str) -> None:
        """Publish what the device should have now: retained DesiredState, queued requests; or revoke it."""
        self._sync_many([device])

    def _sync_many(self, devices: list[str], windowed: bool = False) -> None:
        """`windowed`: the sync worker's publishes, which wait their turn in the window of unacknowledged ones."""
        desired = self.core.desired_states(devices)  # one read for all; a device left out is not active
        for device in devices:
            state = desired.get(device)
            try:
                if state is None:
                    self._revoke(device)
                elif self.core.transport_of(device) not in (None, "mqtt"):
                    # Connected through another front, which sends it; if it comes over MQTT later, _open
                    # publishes what it should have then.
                    continue
                else:
                    self._publish(device, state, windowed)
            except Exception:  # keep syncing the others; the next change retries this one
                log.exception("publishing desired state of device %s failed", device)

    def _revoke(self, device: str) -> None:
        with self._lock:
            session = self._sessions.pop(device, None)
            self._published.pop(device, None)
        if session is not None:
            self.core.close_session(session)
        self._post(_Outgoing(self.topics.desired(device), b"", 1, retain=True))  # clears the retained state
        self.on_revoked(device)

    def _publish(self, device: str, desired: agent_pb2.SignedDesiredState, windowed: bool = False) -> None:
        with self._lock:
            session = self._sessions.get(device)
        if session is not None:
            messages = self.core.outgoing(session, desired)
        else:
            messages = [agent_pb2.HubMessage(sent_at_ms=_now_ms(), desired=desired)]
        for message in messages:
            if message.HasField("desired"):
                revision = message.desired.revision
                with self._lock:
                    if self._published.get(device) == revision:
                        continue
                    self._published[device] = revision
                payload = message.SerializeToString()
                if windowed:
                    self._post(_Outgoing(self.topics.desired(device), payload, 1, retain=True, device=device))
                else:
                    self._post(_Outgoing(self.topics.desired(device), payload, 1, retain=True))
                    self.stats["desired_published"] += 1
            else:
                self._post(_Outgoing(self.topics.inbox(device), message.SerializeToString(), 1))


def _now_ms() -> int:
    return int(time.time() * 1000)
