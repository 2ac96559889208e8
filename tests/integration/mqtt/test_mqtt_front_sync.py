"""The hub's MQTT front publishing desired states, in process on a real data dir, against a real mosquitto:
a rollout larger than its PUBACK window reaches every device, a device connected over gRPC is left to the
gRPC front, and a device that was on gRPC gets its state once it comes over MQTT."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from hub.control import mqtt_client
from hub.control.mqtt_auth import HUB_USERNAME
from hub.control.mqtt_broker import MosquittoBroker
from hub.control.mqtt_front import MqttFront
from hub.services import HubServices
from protos.edgeport.v1 import agent_pb2
from protos.mqtt.codec import Connect, Message
from protos.mqtt.connection import MqttConnection
from protos.mqtt.topics import Topics
from tests.integration.mqtt.conftest import broker_auth
from tests.support import wait_for
from tests.unit.enrollment import enroll

TOPICS = Topics("edgeport")


def _retained_desired(broker: MosquittoBroker, password: str, expect: int) -> dict[str, int]:
    """Device -> revision of every retained desired state on the broker (a fresh subscriber gets them all)."""

    async def collect() -> dict[str, int]:
        got: dict[str, int] = {}

        def on_message(m: Message) -> None:
            got[m.topic.split("/")[1]] = agent_pb2.HubMessage.FromString(m.payload).desired.revision

        conn = MqttConnection(on_message)
        params = Connect("checker", keepalive_s=10, username=HUB_USERNAME, password=password, clean_start=True)
        await conn.open("127.0.0.1", broker.port, params)
        await conn.subscribe([(TOPICS.all("desired"), 1)])
        deadline = time.monotonic() + 10
        while len(got) < expect and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # and nothing more than expected
        await conn.close()
        return got

    return asyncio.run(collect())


async def _hello_over_mqtt(broker: MosquittoBroker, device: str, password: str) -> None:
    conn = MqttConnection(lambda m: None)
    await conn.open("127.0.0.1", broker.port, Connect(device, keepalive_s=10, username=device, password=password))
    hello = agent_pb2.AgentMessage(hello=agent_pb2.Hello(device_id=device))
    conn.publish(TOPICS.reported(device), hello.SerializeToString(), qos=1)
    deadline = time.monotonic() + 5
    while conn.unacked and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await conn.close()


def test_rollout_past_the_window_reaches_all_and_grpc_devices_are_left_to_their_front(
    mosquitto: MosquittoBroker, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(mqtt_client, "PUBLISH_WINDOW", 10)  # a rollout of 60 is six windows
    hub = HubServices.open(tmp_path / "hub")
    names = [f"dev-{i:02d}" for i in range(60)]
    for name in names:
        enroll(hub, name, ["zone=a"])
    auth = broker_auth(mosquitto, TOPICS, "dev-00")
    front = MqttFront(hub.control, TOPICS, host="127.0.0.1", port=mosquitto.port, username=HUB_USERNAME,
                      password=auth.hub_password, is_active=hub.fleet.is_active)  # fmt: skip
    front.start()
    try:
        on_grpc, _ = hub.control.open_session("dev-00", agent_pb2.Hello(), transport="grpc")
        model = tmp_path / "model.onnx"
        model.write_bytes(b"model")
        digest = hub.blobs.put_file(model)
        version = hub.registry.register("m", [{"path": "model.onnx", "digest": digest, "size": 5}]).version
        hub.deployments.create({"name": "svc", "models": [f"m:{version}"], "target": "zone=a"})
        revisions = {n: hub.fleet.standing(n)["desired_revision"] for n in names}  # type: ignore[index]
        wait_for(lambda: front.stats["desired_published"] >= 59, timeout=15, what="59 desired states published")
        retained = _retained_desired(mosquitto, auth.hub_password, 59)
        assert sorted(retained) == names[1:]  # every MQTT-side device, none for the one on gRPC
        assert all(retained[n] == revisions[n] for n in names[1:])
        assert front.stats["inflight_peak"] == 10 and front.broker._window == 10

        # dev-00 leaves gRPC and comes over MQTT (it says Hello on its reported topic): the front publishes
        # its state then.
        hub.control.close_session(on_grpc)
        asyncio.run(_hello_over_mqtt(mosquitto, "dev-00", auth.device_password("dev-00", "cert-of-dev-00")))
        retained = _retained_desired(mosquitto, auth.hub_password, 60)
        assert retained.get("dev-00") == revisions["dev-00"]
    finally:
        front.stop()
        hub.close()


def test_front_reconnects_after_a_broker_restart_and_publishes_what_changed_meanwhile(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    hub = HubServices.open(tmp_path / "hub")
    names = [f"dev-{i}" for i in range(3)]
    for name in names:
        enroll(hub, name, ["zone=b"])
    auth = broker_auth(mosquitto, TOPICS)
    front = MqttFront(hub.control, TOPICS, host="127.0.0.1", port=mosquitto.port, username=HUB_USERNAME,
                      password=auth.hub_password, is_active=hub.fleet.is_active)  # fmt: skip
    front.start()
    try:
        model = tmp_path / "model.onnx"
        model.write_bytes(b"model")
        digest = hub.blobs.put_file(model)
        version = hub.registry.register("m", [{"path": "model.onnx", "digest": digest, "size": 5}]).version
        hub.deployments.create({"name": "one", "models": [f"m:{version}"], "target": "zone=b"})
        wait_for(lambda: front.stats["desired_published"] >= 3, timeout=15, what="3 desired states published")

        mosquitto.stop()
        wait_for(lambda: not front.broker.connected, timeout=10, what="the front to notice the broker is gone")
        hub.deployments.create({"name": "two", "models": [f"m:{version}"], "target": "zone=b"})  # while it is down
        revisions = {n: hub.fleet.standing(n)["desired_revision"] for n in names}  # type: ignore[index]
        mosquitto.start()
        wait_for(lambda: front.broker.connected, timeout=15, what="the front to reconnect")
        retained = _retained_desired(mosquitto, auth.hub_password, 3)
        assert retained == revisions  # the states made while the broker was down, once it is back
    finally:
        front.stop()
        hub.close()


def test_a_hello_kept_for_the_hub_while_it_was_away_is_welcomed_when_it_connects(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    hub = HubServices.open(tmp_path / "hub")
    enroll(hub, "dev-w", ["zone=c"])
    auth = broker_auth(mosquitto, TOPICS, "dev-w")

    def front() -> MqttFront:
        return MqttFront(hub.control, TOPICS, host="127.0.0.1", port=mosquitto.port, username=HUB_USERNAME,
                         password=auth.hub_password, is_active=hub.fleet.is_active)  # fmt: skip

    first = front()
    first.start()  # makes the hub's persistent session and its subscriptions
    first.stop()

    async def device() -> float:
        welcomed = asyncio.get_running_loop().create_future()

        def on_message(m: Message) -> None:
            if agent_pb2.HubMessage.FromString(m.payload).HasField("welcome") and not welcomed.done():
                welcomed.set_result(time.monotonic())

        conn = MqttConnection(on_message)
        password = auth.device_password("dev-w", "cert-of-dev-w")
        await conn.open("127.0.0.1", mosquitto.port, Connect("dev-w", 10, "dev-w", password, clean_start=True))
        await conn.subscribe([(TOPICS.inbox("dev-w"), 1)])
        hello = agent_pb2.AgentMessage(hello=agent_pb2.Hello(device_id="dev-w"))
        conn.publish(TOPICS.reported("dev-w"), hello.SerializeToString(), qos=1)  # kept for the absent hub
        await asyncio.sleep(0.3)
        second = front()
        started = time.monotonic()
        await asyncio.to_thread(second.start)  # the broker hands it the Hello at once, before the SUBACK
        try:
            async with asyncio.timeout(5):
                return await welcomed - started
        finally:
            await asyncio.to_thread(second.stop)
            await conn.close()

    try:
        assert asyncio.run(device()) < 5
    finally:
        hub.close()
