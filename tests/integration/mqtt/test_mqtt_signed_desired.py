"""Signed desired state over MQTT, with `hub serve --mqtt`, a real mosquitto and a real `agent run --transport mqtt`:
someone with the broker's admin credentials publishes retained desired states on the device's topic (forged,
tampered, another device's, a replay). Nothing is deployed, the model keeps answering, and each refusal shows
in `hub service show`."""

from __future__ import annotations

import json
from pathlib import Path

import paho.mqtt.client as mqtt

from hub.control.mqtt_auth import HUB_USERNAME, BrokerAuth
from protos.edgeport.v1 import agent_pb2
from protos.mqtt.topics import Topics
from tests.integration.mqtt.conftest import MqttHub
from tests.integration.signed_support import attacks, score_digits
from tests.support import PYTHON, REPO, Processes, wait_for


def _service_device(hub: MqttHub, service: str) -> dict:
    done = hub.cli("service", "show", service, "--output", "json")
    assert done.returncode == 0, done.stderr
    [device] = json.loads(done.stdout)["devices"]
    return device


def test_a_broker_admin_cannot_deploy_anything(
    tmp_path: Path, processes: Processes, mqtt_hub: MqttHub, digits_model: Path
) -> None:
    args = [PYTHON, "-m", "agent", "run", "--hub", mqtt_hub.address, "--data-dir", str(tmp_path / "edge-s"),
            "--transport", "mqtt", "--heartbeat-s", "1", "--token", mqtt_hub.token("edge-s")]
    agent = processes.start(args, name="agent", cwd=REPO)
    wait_for(lambda: "connected to hub as device edge-s (mqtt)" in processes.log(agent), timeout=30,
             what="agent connected over MQTT")  # fmt: skip
    assert mqtt_hub.cli("model", "register", "-n", "digits", "-p", str(digits_model.parent)).returncode == 0
    done = mqtt_hub.cli("deploy", "-n", "digits", "-m", "digits:1", "--target", "edge-s", "--timeout", "90")
    assert done.returncode == 0 and "Healthy" in done.stdout, done.stdout + done.stderr + processes.log(agent)
    before = _service_device(mqtt_hub, "digits")
    assert score_digits(before["scoring_uri"]) >= 0.8
    applied = wait_for(lambda: mqtt_hub.device("edge-s")["applied_revision"], timeout=10, what="revision applied")
    assert isinstance(applied, int) and applied >= 2
    applied_lines = processes.log(agent).count("desired state revision")

    # The broker's most powerful account: the hub's own.
    admin = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="intruder", protocol=mqtt.MQTTv5)
    admin.username_pw_set(HUB_USERNAME, BrokerAuth(mqtt_hub.broker.dir, Topics("edgeport")).hub_password)
    admin.connect("127.0.0.1", mqtt_hub.broker.port, keepalive=10)
    admin.loop_start()
    try:
        for attack in attacks(mqtt_hub.data_dir / "pki", tmp_path, "edge-s", applied):
            payload = agent_pb2.HubMessage(desired=attack.signed).SerializeToString()
            admin.publish(Topics("edgeport").desired("edge-s"), payload, qos=1, retain=True).wait_for_publish(5)
            line = f"refused desired state revision {attack.revision}: {attack.reason}"
            wait_for(lambda line=line: line in processes.log(agent), timeout=15, what=f"{attack.name} refused")
            shown = wait_for(
                lambda line=line: (d := _service_device(mqtt_hub, "digits"))["message"].startswith(line) and d,
                timeout=15, what=f"the {attack.name} refusal in `hub service show`",
            )  # fmt: skip
            assert isinstance(shown, dict) and shown["phase"] == "Healthy" and shown["serving_generation"] == 1
            assert shown["scoring_uri"] == before["scoring_uri"]
            assert score_digits(before["scoring_uri"]) >= 0.8, f"the model stopped answering after {attack.name}"
    finally:
        admin.loop_stop()
        admin.disconnect()
    assert processes.log(agent).count("desired state revision") - applied_lines == 4  # four refusals, no apply
    assert mqtt_hub.device("edge-s")["applied_revision"] == applied
    table = mqtt_hub.cli("service", "show", "digits")
    assert f"refused desired state revision {applied - 1}: replay" in table.stdout, table.stdout
