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

The connection to the broker is hub/control/mqtt_client.py (a loop thread of its own, a window
of unacknowledged publishes, reconnects). Change notifications are coalesced into a dirty set
that one worker thread syncs (level-triggered, like a controller): it reads desired states
from the store and hands the publishes to that connection.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable

from hub.control.core import ControlCore, Session
from hub.control.mqtt_client import BrokerClient, Outgoing
from hub.errors import HubError
from protos.edgeport.v1 import agent_pb2
from protos.mqtt import OFFLINE_PAYLOAD, ONLINE, REPORTED, Message, Topics

log = logging.getLogger("hub.control.mqtt")

SYNC_CHUNK = 500  # devices whose desired state is read and published per pass of the sync worker


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
        tls: ssl.SSLContext | None = None,
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
        self.broker = BrokerClient(
            host=host, port=port, username=username, password=password, keepalive_s=keepalive_s,
            subscriptions=[(topics.all(REPORTED), 1), (topics.all(ONLINE), 1)],
            on_message=self._on_message, on_lost=self._lost, stats=self.stats, tls=tls,
        )  # fmt: skip

    # ---- lifecycle ----

    def start(self, timeout: float = 60.0) -> None:
        """Connect (blocking up to `timeout`), subscribe, and start syncing desired states; HubError if refused.

        The wait is long because a broker busy with a fleet (10,000 sessions reconnecting or expiring
        after a hub restart) can take tens of seconds to answer one more CONNACK.
        """
        self.broker.start(timeout)
        self.core.on_drained(self.broker.resume_soon)
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
        self.broker.stop()

    def _lost(self, devices: list[str]) -> None:
        """The broker connection ended with these devices' desired states unacknowledged: sync them again."""
        with self._lock:
            for device in devices:
                self._published.pop(device, None)
        self.sync_all(devices)

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
            self.broker.post(Outgoing(inbox, ack.SerializeToString(), 0))

        self.core.submit(session, message, send_ack)
        # While the hub is behind, stop reading: the broker holds the rest; the core says when it drained.
        if self.core.congested():
            self.broker.pause_reading()

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
        self.broker.post(Outgoing(self.topics.inbox(device), reply.SerializeToString(), 1))
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
        self.broker.post(Outgoing(self.topics.desired(device), b"", 1, retain=True))  # clears the retained state
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
                    self.broker.post(Outgoing(self.topics.desired(device), payload, 1, retain=True, device=device))
                else:
                    self.broker.post(Outgoing(self.topics.desired(device), payload, 1, retain=True))
                    self.stats["desired_published"] += 1
            else:
                self.broker.post(Outgoing(self.topics.inbox(device), message.SerializeToString(), 1))


def _now_ms() -> int:
    return int(time.time() * 1000)
