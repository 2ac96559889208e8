"""Broker credentials and ACL, against a real mosquitto with real paho clients: a device reads only its own
desired state and writes only its own reported topics; wrong or removed credentials are refused."""

from __future__ import annotations

import queue
import time

import paho.mqtt.client as mqtt

from hub.control.mqtt_auth import HUB_USERNAME, BrokerAuth
from hub.control.mqtt_broker import MosquittoBroker
from protos.mqtt.topics import Topics
from tests.integration.mqtt.conftest import broker_auth
from tests.support import wait_for

TOPICS = Topics("edgeport")


class Client:
    """A paho MQTT 5 client in its own network thread, collecting what it receives."""

    def __init__(self, broker: MosquittoBroker, username: str, password: str, client_id: str | None = None) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connack: queue.Queue[int] = queue.Queue()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or username, protocol=mqtt.MQTTv5)
        self.c.username_pw_set(username, password)
        self.c.on_connect = lambda c, u, f, rc, p: self.connack.put(rc.value)
        self.c.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.c.connect("127.0.0.1", broker.port, keepalive=10)
        self.c.loop_start()

    def code(self) -> int:
        """The CONNACK reason code (0: accepted)."""
        return self.connack.get(timeout=10)

    def subscribe(self, topic: str) -> None:
        """Subscribe QoS 1 and give the broker a moment to deliver retained messages."""
        self.c.subscribe(topic, qos=1)
        time.sleep(0.3)

    def received(self) -> list[tuple[str, bytes]]:
        """Everything received so far."""
        out = []
        while not self.messages.empty():
            out.append(self.messages.get())
        return out

    def close(self) -> None:
        """Disconnect and stop the thread."""
        self.c.disconnect()
        self.c.loop_stop()


def _auth(broker: MosquittoBroker, *devices: str) -> BrokerAuth:
    return broker_auth(broker, TOPICS, *devices)


def test_a_device_reads_only_its_own_desired_state_and_cannot_publish_as_another(mosquitto: MosquittoBroker) -> None:
    auth = _auth(mosquitto, "cam-a", "cam-b")
    hub = Client(mosquitto, HUB_USERNAME, auth.hub_password, "hub-test")
    assert hub.code() == 0
    hub.subscribe(TOPICS.all("reported"))
    for device in ("cam-a", "cam-b"):
        hub.c.publish(TOPICS.desired(device), f"manifest of {device}".encode(), qos=1, retain=True).wait_for_publish(5)

    a = Client(mosquitto, "cam-a", auth.device_password("cam-a", "cert-of-cam-a"))
    assert a.code() == 0
    a.subscribe(TOPICS.desired("cam-b"))  # another device's manifest, asked for by name
    a.subscribe("edgeport/#")  # and by wildcard
    got = a.received()
    assert (TOPICS.desired("cam-a"), b"manifest of cam-a") in got  # its own arrives (retained)
    assert not [t for t, _ in got if "cam-b" in t], got  # never cam-b's

    # Publishing as cam-b (on cam-b's reported topic) reaches nobody; its own reported topic works.
    a.c.publish(TOPICS.reported("cam-b"), b"forged", qos=1).wait_for_publish(5)
    a.c.publish(TOPICS.desired("cam-a"), b"self-made manifest", qos=1, retain=True).wait_for_publish(5)
    a.c.publish(TOPICS.reported("cam-a"), b"genuine", qos=1).wait_for_publish(5)
    wait_for(lambda: any(p == b"genuine" for _, p in hub.messages.queue), timeout=5, what="cam-a's own report")
    time.sleep(0.3)
    payloads = [p for _, p in hub.received()]
    assert b"forged" not in payloads and payloads.count(b"genuine") == 1

    # The device could not overwrite its own manifest either (read-only for devices).
    b = Client(mosquitto, "cam-b", auth.device_password("cam-b", "cert-of-cam-b"))
    assert b.code() == 0
    check = Client(mosquitto, HUB_USERNAME, auth.hub_password, "hub-check")
    assert check.code() == 0
    check.subscribe(TOPICS.desired("cam-a"))
    assert check.received() == [(TOPICS.desired("cam-a"), b"manifest of cam-a")]
    for c in (hub, a, b, check):
        c.close()


def test_wrong_unknown_and_removed_credentials_are_refused(mosquitto: MosquittoBroker) -> None:
    auth = _auth(mosquitto, "cam-a", "cam-b")
    wrong = Client(mosquitto, "cam-a", "not-the-password")
    assert wrong.code() in (134, 135)  # bad user name or password / not authorized
    wrong.close()
    stranger = Client(mosquitto, "cam-z", auth.device_password("cam-z", "whatever"))
    assert stranger.code() in (134, 135)
    stranger.close()
    anonymous = Client(mosquitto, "", "", "anon")
    assert anonymous.code() in (134, 135)
    anonymous.close()
    # cam-b's password does not open cam-a's account
    swapped = Client(mosquitto, "cam-a", auth.device_password("cam-b", "cert-of-cam-b"))
    assert swapped.code() in (134, 135)
    swapped.close()

    # Revocation: the user is removed and the broker reloaded; the old password no longer works.
    auth.remove_device("cam-a")
    auth.write()
    assert auth.reload()
    time.sleep(0.3)
    gone = Client(mosquitto, "cam-a", auth.device_password("cam-a", "cert-of-cam-a"))
    assert gone.code() in (134, 135)
    gone.close()
    still = Client(mosquitto, "cam-b", auth.device_password("cam-b", "cert-of-cam-b"))
    assert still.code() == 0
    still.close()
