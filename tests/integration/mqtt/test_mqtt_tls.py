"""MQTT over TLS end to end: `hub serve --mqtt mqtts://... --mqtt-run-broker` runs mosquitto with a TLS listener
whose certificate the hub CA issued; an agent process deploys over it to Healthy through a TCP relay that
records every byte, and its broker password is nowhere in them; a client that does not trust the hub CA
cannot connect."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from pathlib import Path

import pytest

from agent.state import AgentState
from hub.control.mqtt_broker import MosquittoBroker
from hub.control.mqtt_probe import broker_accepts
from hub.control.mqtt_tls import BrokerTls
from hub.pki import CertificateAuthority
from protos.mqtt import Connack, Connect, MqttConnection, Topics
from protos.mqtt.url import client_tls_context
from tests.integration.mqtt.conftest import MqttHub, broker_auth
from tests.support import PYTHON, REPO, Processes, free_port, wait_for


class RecordingRelay:
    """A TCP relay to `target` on a free loopback port that keeps every byte it forwards, both ways."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.recorded = bytearray()
        self._lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    self.recorded += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop accepting (connections in flight end with their peers)."""
        self.server.close()


@pytest.fixture
def mqtts_hub(tmp_path: Path, processes: Processes) -> MqttHub:
    """`hub serve --mqtt mqtts://127.0.0.1:PORT --mqtt-run-broker`: the hub issues the broker's certificate."""
    port, broker_port = free_port(), free_port()
    broker_dir = tmp_path / "broker"
    broker = MosquittoBroker(broker_dir, broker_port, tls=BrokerTls.in_dir(broker_dir))  # run by the hub
    args = [PYTHON, "-m", "hub", "serve", "--data-dir", str(tmp_path / "hub"), "--port", str(port), "--grpc-port",
            str(free_port()), "--mqtt", broker.url, "--mqtt-dir", str(broker_dir), "--mqtt-run-broker"]
    hub = MqttHub(f"127.0.0.1:{port}", broker, tmp_path / "hub", processes, args)
    hub.start()
    assert broker.url.startswith("mqtts://")
    return hub


def test_agent_over_mqtts_deploys_and_its_password_never_crosses_in_clear(
    tmp_path: Path, processes: Processes, mqtts_hub: MqttHub, digits_model: Path
) -> None:
    relay = RecordingRelay(("127.0.0.1", mqtts_hub.broker.port))
    try:
        data_dir = tmp_path / "edge-tls"
        agent = processes.start(
            [PYTHON, "-m", "agent", "run", "--hub", mqtts_hub.address, "--data-dir", str(data_dir), "--transport",
             "mqtt", "--broker", f"mqtts://127.0.0.1:{relay.port}", "--token", mqtts_hub.token("edge-tls", "site=tls")],
            name="agent", cwd=REPO,
        )  # fmt: skip
        wait_for(lambda: "connected to hub as device edge-tls (mqtt)" in processes.log(agent), timeout=30,
                 what="agent connected over mqtts")  # fmt: skip
        assert mqtts_hub.cli("model", "register", "-n", "digits", "-p", str(digits_model.parent)).returncode == 0
        done = mqtts_hub.cli("deploy", "-n", "digits-tls", "-m", "digits:1", "--target", "site=tls", "--timeout", "90")
        assert done.returncode == 0, done.stdout + done.stderr + processes.log(agent)
        assert "Healthy" in done.stdout
        identity = AgentState(data_dir).identity()
        assert identity is not None
        password = identity.mqtt["password"].encode()
        assert len(password) >= 16
        with relay._lock:
            wire = bytes(relay.recorded)
        assert len(wire) > 2000, "the relay saw the session"
        assert wire[:1] == b"\x16", "the first bytes are a TLS handshake record"
        assert password not in wire and b"edgeport/edge-tls/" not in wire  # nor the topics
        print(f"relay recorded {len(wire)} bytes of the mqtts session; the password is not among them")
    finally:
        relay.close()


def test_a_client_that_does_not_trust_the_hub_ca_cannot_connect(tmp_path: Path, mqtts_hub: MqttHub) -> None:
    other_ca = CertificateAuthority(tmp_path / "other-pki")

    async def connect(context: ssl.SSLContext) -> Connack:
        conn = MqttConnection(lambda m: None, lambda i, r: None, lambda reason: None)
        try:
            return await conn.open("127.0.0.1", mqtts_hub.broker.port, Connect("_probe-untrusted", 30), 10,
                                   tls=context)  # fmt: skip
        finally:
            conn.abort()

    for context in (client_tls_context(other_ca.ca_pem), ssl.create_default_context()):
        with pytest.raises(ssl.SSLCertVerificationError):
            asyncio.run(connect(context))
    # The hub's own CA is trusted: the handshake completes, and the broker answers (refusing a client with
    # no password: anonymous access is off on the TLS listener too).
    hub_ca = (mqtts_hub.broker.dir / "ca.crt").read_bytes()
    assert asyncio.run(connect(client_tls_context(hub_ca))).reason in (134, 135)


def test_the_hubs_reload_probe_speaks_tls(mqtts_hub: MqttHub) -> None:
    """The probe that asks the broker whether it took a credential change gets an answer over TLS too."""
    tls = client_tls_context((mqtts_hub.broker.dir / "ca.crt").read_bytes())
    assert broker_accepts("127.0.0.1", mqtts_hub.broker.port, "nobody", "wrong", tls=tls) is False


def test_plain_mqtt_shows_the_password_to_a_relay(mosquitto: MosquittoBroker) -> None:
    """The control for the check above: the same relay over plain MQTT does see the password."""
    auth = broker_auth(mosquitto, Topics(), "edge-plain")
    password = auth.device_password("edge-plain", "cert-of-edge-plain")
    relay = RecordingRelay(("127.0.0.1", mosquitto.port))

    async def connect() -> Connack:
        conn = MqttConnection(lambda m: None, lambda i, r: None, lambda reason: None)
        try:
            return await conn.open("127.0.0.1", relay.port, Connect("edge-plain", 30, "edge-plain", password), 10)
        finally:
            conn.abort()

    try:
        assert asyncio.run(connect()).reason == 0
        with relay._lock:
            assert password.encode() in bytes(relay.recorded)
    finally:
        relay.close()
