"""The MQTT transport end to end: `hub serve --mqtt` + real mosquitto + `agent run --transport mqtt` processes.

Deploy a no-code ONNX model over MQTT to Healthy and score it; the Last Will marks a killed agent offline
within its keep-alive window; a revoked device loses its broker account.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import numpy as np

from simulators.models import digits_data
from tests.integration.mqtt.conftest import MqttHub
from tests.support import PYTHON, REPO, Processes, wait_for

KEEPALIVE_S = 2  # agents ping every 2 s, so the broker fires the Last Will ~3 s after silence


def _agent(processes: Processes, hub: MqttHub, data_dir: Path, token: str | None, name: str):  # type: ignore[no-untyped-def]
    args = [PYTHON, "-m", "agent", "run", "--hub", hub.address, "--data-dir", str(data_dir), "--transport", "mqtt",
            "--heartbeat-s", "1", *(["--token", token] if token else [])]
    env = {"EDGEPORT_MQTT_KEEPALIVE_S": str(KEEPALIVE_S), "EDGEPORT_MQTT_REFUSED_GIVE_UP_S": "2"}
    return processes.start(args, name=name, cwd=REPO, env=env)


def test_deploy_over_mqtt_score_and_last_will(
    tmp_path: Path, processes: Processes, mqtt_hub: MqttHub, digits_model: Path
) -> None:
    agent = _agent(processes, mqtt_hub, tmp_path / "edge-1", mqtt_hub.token("edge-1", "site=mqtt"), "agent")
    wait_for(lambda: "connected to hub as device edge-1 (mqtt)" in processes.log(agent), timeout=30,
             what="agent connected over MQTT")
    shown = wait_for(lambda: (d := mqtt_hub.device("edge-1"))["online"] and d, timeout=10, what="online at hub")
    assert shown["transport"] == "mqtt"

    done = mqtt_hub.cli("model", "register", "-n", "digits", "-p", str(digits_model.parent))
    assert done.returncode == 0, done.stderr
    done = mqtt_hub.cli("deploy", "-n", "digits-mqtt", "-m", "digits:1", "--target", "site=mqtt", "--timeout", "90")
    assert done.returncode == 0, done.stdout + done.stderr + processes.log(agent)
    assert "Healthy" in done.stdout

    service = json.loads(mqtt_hub.cli("service", "show", "digits-mqtt", "--output", "json").stdout)
    uri = next(d["scoring_uri"] for d in service["devices"] if d["device"] == "edge-1")
    x, y = digits_data()
    body = json.dumps({"data": x[:5].tolist()}).encode()
    req = urllib.request.Request(uri, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        result = json.loads(r.read())
    labels = np.asarray(result.get("label", result) if isinstance(result, dict) else result).reshape(-1)[:5]
    assert (labels.astype(int) == y[:5]).mean() >= 0.8  # the model really answers

    # kill -9: no DISCONNECT, so the broker publishes the Last Will and the hub marks the device offline.
    os.kill(agent.pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: not mqtt_hub.device("edge-1")["online"], timeout=KEEPALIVE_S * 1.5 + 5,
             what="Last Will marks edge-1 offline")
    print(f"Last Will: offline {time.monotonic() - killed:.1f}s after kill -9 (keep-alive {KEEPALIVE_S}s)")

    # Restart without a token: same identity, same broker account, back online; the runtime is still served.
    again = _agent(processes, mqtt_hub, tmp_path / "edge-1", None, "agent2")
    wait_for(lambda: mqtt_hub.device("edge-1")["online"], timeout=30, what="edge-1 back online")
    assert "connected to hub as device edge-1 (mqtt)" in processes.log(again)


def test_revoked_device_loses_its_broker_account(tmp_path: Path, processes: Processes, mqtt_hub: MqttHub) -> None:
    agent = _agent(processes, mqtt_hub, tmp_path / "edge-r", mqtt_hub.token("edge-r"), "agent")
    wait_for(lambda: mqtt_hub.device("edge-r")["online"], timeout=30, what="edge-r online")
    assert "edge-r" in (mqtt_hub.broker.dir / "passwords").read_text()
    done = mqtt_hub.cli("device", "revoke", "edge-r")
    assert done.returncode == 0, done.stderr
    # The two files are replaced one after the other (each atomically): wait for both, not for one and then
    # read the other in the gap between them.
    wait_for(lambda: "edge-r" not in (mqtt_hub.broker.dir / "passwords").read_text()
             and "user edge-r" not in (mqtt_hub.broker.dir / "acl").read_text(), timeout=10,
             what="broker user and ACL entry removed")
    wait_for(lambda: not mqtt_hub.device("edge-r")["online"], timeout=15, what="revoked device offline")
    # mosquitto drops the session on reload, and the old password no longer opens the account.
    # After a few refusals (a fresh account may lag a reload; a revoked one never comes back) the agent gives up.
    assert agent.wait(30) == 1
    assert "refused the connection: Not authorized" in processes.log(agent)
