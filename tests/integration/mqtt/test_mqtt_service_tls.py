"""HTTPS scoring endpoints over the MQTT transport, with a real mosquitto and a real `agent run --transport mqtt`:
the user's own certificate and key reach the device, and the broker, which keeps the desired state as a retained
message, holds only the key sealed to that device's runtime key."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hub.control.mqtt_auth import HUB_USERNAME, BrokerAuth
from protos.edgeport.v1 import agent_pb2
from protos.mqtt.topics import Topics
from tests.integration.mqtt.conftest import MqttHub
from tests.support import PYTHON, REPO, Processes, wait_for


def _user_pair(folder: Path) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scorer.example")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cert.pem").write_bytes(cert_pem)
    (folder / "key.pem").write_bytes(key_pem)
    return cert_pem, key_pem


def _retained_desired(hub: MqttHub, device: str) -> tuple[bytes, agent_pb2.DesiredState]:
    """The retained message the broker keeps for `device` (bytes, and the DesiredState inside), read with the
    broker's most powerful account."""
    got: list[bytes] = []
    arrived = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="reader", protocol=mqtt.MQTTv5)
    client.username_pw_set(HUB_USERNAME, BrokerAuth(hub.broker.dir, Topics("edgeport")).hub_password)

    def on_message(_client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        got.append(message.payload)
        arrived.set()

    client.on_message = on_message
    client.connect("127.0.0.1", hub.broker.port, keepalive=10)
    client.subscribe(Topics("edgeport").desired(device), qos=1)
    client.loop_start()
    try:
        assert arrived.wait(10), "no retained desired state on the broker"
    finally:
        client.loop_stop()
        client.disconnect()
    signed = agent_pb2.HubMessage.FromString(got[-1]).desired
    return got[-1], agent_pb2.DesiredState.FromString(signed.desired_state)


def test_the_users_key_crosses_the_broker_sealed(
    tmp_path: Path, processes: Processes, mqtt_hub: MqttHub, digits_model: Path
) -> None:
    args = [PYTHON, "-m", "agent", "run", "--hub", mqtt_hub.address, "--data-dir", str(tmp_path / "edge-t"),
            "--transport", "mqtt", "--heartbeat-s", "1", "--token", mqtt_hub.token("edge-t")]
    agent = processes.start(args, name="agent", cwd=REPO)
    wait_for(lambda: "connected to hub as device edge-t (mqtt)" in processes.log(agent), timeout=30,
             what="agent connected over MQTT")  # fmt: skip
    cert_pem, key_pem = _user_pair(tmp_path / "tls")
    dc = tmp_path / "dc.json"
    dc.write_text(json.dumps({"sslEnabled": True, "sslCertificate": "tls/cert.pem", "sslKey": "tls/key.pem"}))
    assert mqtt_hub.cli("model", "register", "-n", "digits", "-p", str(digits_model.parent)).returncode == 0
    done = mqtt_hub.cli("deploy", "-n", "digits", "-m", "digits:1", "--dc", str(dc), "--target", "edge-t",
                        "--timeout", "90", "--output", "json")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr + processes.log(agent)
    [device] = json.loads(done.stdout)["devices"]
    assert device["scoring_uri"].startswith("https://127.0.0.1:")
    reply = httpx.post(device["scoring_uri"], json={"data": [[0.0] * 64]},
                       verify=ssl.create_default_context(cadata=cert_pem.decode()), timeout=10)  # fmt: skip
    assert reply.status_code == 200, reply.text

    raw, state = _retained_desired(mqtt_hub, "edge-t")
    [manifest] = state.services
    assert manifest.tls.user_certificate and manifest.tls.certificate_pem == cert_pem
    assert len(manifest.tls.encrypted_key) > 65 + 12 + 16
    key_der = serialization.load_pem_private_key(key_pem, None).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert key_pem not in raw and key_der not in raw and b"PRIVATE KEY" not in raw
