"""The MQTT 5 connection hub and agent connect with (protos/mqtt/connection.py) against a real mosquitto: retained
delivery, QoS 1 both ways, the ACL's refusals as reason codes, keep-alive, and the Last Will only when the
connection drops without DISCONNECT."""

from __future__ import annotations

import asyncio
import dataclasses

from hub.control.mqtt_auth import HUB_USERNAME, BrokerAuth
from hub.control.mqtt_broker import MosquittoBroker
from protos.mqtt.codec import Connect, Message, Will
from protos.mqtt.connection import MqttConnection
from protos.mqtt.topics import Topics
from tests.integration.mqtt.conftest import broker_auth
from tests.support import free_port

TOPICS = Topics("edgeport")


def _auth(broker: MosquittoBroker, *devices: str) -> BrokerAuth:
    return broker_auth(broker, TOPICS, *devices)


class Client:
    """An MqttConnection and what it received."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self.closed: list[str] = []
        self.conn = MqttConnection(self.messages.put_nowait, on_close=self.closed.append)

    async def next(self, timeout: float = 5.0) -> Message:
        return await asyncio.wait_for(self.messages.get(), timeout)


async def _open(broker: MosquittoBroker, username: str, password: str, **kw: object) -> tuple[Client, int]:
    client = Client()
    params = Connect(client_id=username, keepalive_s=10, username=username, password=password)
    connack = await client.conn.open("127.0.0.1", broker.port, dataclasses.replace(params, **kw))  # type: ignore[arg-type]
    return client, connack.reason


def test_retained_desired_state_qos1_both_ways_and_acl_refusals(mosquitto: MosquittoBroker) -> None:
    auth = _auth(mosquitto, "cam-a", "cam-b")

    async def scenario() -> None:
        hub, code = await _open(mosquitto, HUB_USERNAME, auth.hub_password)
        assert code == 0
        assert await hub.conn.subscribe([(TOPICS.all("reported"), 1)]) == [1]
        hub.conn.publish(TOPICS.desired("cam-a"), b"manifest of cam-a", qos=1, retain=True)

        cam, code = await _open(mosquitto, "cam-a", auth.device_password("cam-a", "cert-of-cam-a"))
        assert code == 0
        # Its own desired state is granted and arrives retained; another device's is refused by the ACL.
        granted = await cam.conn.subscribe([(TOPICS.desired("cam-a"), 1), (TOPICS.desired("cam-b"), 1)])
        assert granted[0] == 1
        got = await cam.next()
        assert (got.topic, got.payload, got.retain, got.qos) == (TOPICS.desired("cam-a"), b"manifest of cam-a",
                                                                 True, 1)  # fmt: skip
        # QoS 1 up: the broker acknowledges and the hub receives; the ids are released.
        for i in range(50):
            cam.conn.publish(TOPICS.reported("cam-a"), f"report {i}".encode(), qos=1)
        received = [await hub.next() for _ in range(50)]
        assert [m.payload for m in received] == [f"report {i}".encode() for i in range(50)]
        # A packet larger than the shared read buffer arrives over several reads, whole.
        big = bytes(range(256)) * 1024
        cam.conn.publish(TOPICS.reported("cam-a"), big, qos=1)
        assert (await hub.next()).payload == big
        for _ in range(50):
            if not cam.conn.unacked:
                break
            await asyncio.sleep(0.05)
        assert not cam.conn.unacked
        await cam.conn.close()
        await hub.conn.close()
        assert cam.closed and not cam.conn.is_open

    asyncio.run(scenario())


def test_wrong_password_is_refused_with_its_reason_code(mosquitto: MosquittoBroker) -> None:
    _auth(mosquitto, "cam-a")

    async def scenario() -> None:
        client, code = await _open(mosquitto, "cam-a", "not-the-password")
        assert code in (134, 135)  # Bad User Name or Password / Not authorized
        await client.conn.close()

    asyncio.run(scenario())


def test_last_will_only_when_the_connection_drops_and_keepalive_holds_an_idle_link(mosquitto: MosquittoBroker) -> None:
    auth = _auth(mosquitto, "cam-a")
    online = TOPICS.online("cam-a")

    async def scenario() -> None:
        hub, _ = await _open(mosquitto, HUB_USERNAME, auth.hub_password)
        await hub.conn.subscribe([(TOPICS.all("online"), 1)])
        password = auth.device_password("cam-a", "cert-of-cam-a")
        will = Will(online, b"offline")
        cam, code = await _open(mosquitto, "cam-a", password, will=will, keepalive_s=1)
        assert code == 0
        await asyncio.sleep(2.5)  # idle for over two keep-alives: pings keep it open
        assert cam.conn.is_open and not cam.closed
        await cam.conn.close()  # DISCONNECT: the broker drops the Will
        await asyncio.sleep(0.5)
        assert hub.messages.empty()
        cam, code = await _open(mosquitto, "cam-a", password, will=will, keepalive_s=1)
        assert code == 0
        cam.conn.abort()  # no DISCONNECT: the broker publishes the Will
        got = await hub.next()
        assert (got.topic, got.payload) == (online, b"offline")
        await hub.conn.close()

    asyncio.run(scenario())


def test_an_unreachable_broker_is_an_oserror() -> None:
    async def scenario() -> None:
        conn = MqttConnection(lambda m: None)
        try:
            await conn.open("127.0.0.1", free_port(), Connect("x", keepalive_s=5), timeout_s=5)
        except OSError as exc:
            assert "refused" in str(exc).lower() or exc.errno is not None
        else:
            raise AssertionError("connected to nothing")

    asyncio.run(scenario())
