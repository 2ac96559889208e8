"""MQTT over TLS without a broker: what broker URLs are accepted, the broker certificate, the listener config."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from agent.link.base import LinkClosed
from agent.link.mqtt import MqttLink
from agent.state import Identity
from hub.control.mqtt_bridge import MqttBridge, parse_mqtt_url
from hub.control.mqtt_broker import write_config
from hub.control.mqtt_tls import broker_host_names, issue_broker_tls
from hub.errors import BadInput
from hub.pki import CertificateAuthority
from hub.services import HubServices
from protos.edgeport.v1 import agent_pb2
from protos.mqtt.url import BrokerUrlError, client_tls_context, is_loopback, parse_broker_url


def test_mqtts_defaults_to_port_8883_and_mqtt_to_1883() -> None:
    assert parse_broker_url("mqtts://broker.example.net").port == 8883
    assert parse_broker_url("mqtts://broker.example.net").tls
    assert parse_broker_url("ssl://10.0.0.5:9883").port == 9883
    plain = parse_broker_url("mqtt://127.0.0.1")
    assert (plain.port, plain.tls) == (1883, False)
    assert parse_broker_url("127.0.0.1:1884").port == 1884  # an agent's --broker may omit the scheme


@pytest.mark.parametrize("url", ["mqtt://10.0.0.5:1883", "tcp://broker.example.net", "mqtt://[2001:db8::1]"])
def test_plain_mqtt_off_this_machine_is_refused_without_insecure(url: str) -> None:
    with pytest.raises(BrokerUrlError, match=r"in the clear.*mqtts://.*--insecure"):
        parse_broker_url(url)
    assert not parse_broker_url(url, insecure=True).tls
    with pytest.raises(BadInput, match=r"--mqtt .*in the clear"):
        parse_mqtt_url(url)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


def test_the_agent_link_refuses_plain_mqtt_to_a_network_broker(tmp_path: Path) -> None:
    identity = Identity("edge-1", "127.0.0.1:7070", "", "c" * 64,
                        mqtt={"url": "mqtt://10.1.2.3:1883", "username": "edge-1", "password": "secret"})  # fmt: skip
    link = MqttLink(identity, ca_file=tmp_path / "ca.crt")
    with pytest.raises(LinkClosed, match="in the clear"):
        asyncio.run(link.open(agent_pb2.Hello()))
    assert link.refused  # the same URL next time: the agent stops instead of retrying forever


def test_broker_certificate_names_the_broker_and_is_kept(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "pki")
    files = issue_broker_tls(ca, tmp_path / "mqtt", broker_host_names("broker.example.net", "0.0.0.0"))
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "broker.example.net" in names.get_values_for_type(x509.DNSName)
    assert "0.0.0.0" not in {str(a) for a in names.get_values_for_type(x509.IPAddress)}
    assert ca.verify(files.cert.read_bytes()) is not None
    assert files.key.stat().st_mode & 0o777 == 0o600
    first = files.cert.read_bytes()
    issue_broker_tls(ca, tmp_path / "mqtt", broker_host_names("broker.example.net"))
    assert files.cert.read_bytes() == first  # still covers the names: not reissued
    issue_broker_tls(ca, tmp_path / "mqtt", broker_host_names("other.example.net"))
    assert files.cert.read_bytes() != first


def test_the_listener_config_names_the_tls_files(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "pki")
    files = issue_broker_tls(ca, tmp_path / "mqtt", broker_host_names())
    text = write_config(tmp_path / "mqtt", 8883, tls=files).read_text().splitlines()
    listener = text.index("listener 8883 127.0.0.1")
    assert text[listener + 1:listener + 5] == [f"cafile {files.ca}", f"certfile {files.cert}",
                                               f"keyfile {files.key}", "tls_version tlsv1.2"]  # fmt: skip
    assert not any(line.startswith("certfile") for line in write_config(tmp_path / "plain", 1883).read_text()
                   .splitlines())  # fmt: skip


def test_client_context_trusts_only_the_given_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "pki")
    context = client_tls_context(ca.ca_pem)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1


def test_the_bridge_issues_the_broker_certificate_and_checks_the_broker_with_the_hub_ca(
    hub: HubServices, tmp_path: Path
) -> None:
    bridge = MqttBridge(hub, "mqtts://127.0.0.1:8883", directory=tmp_path / "mqtt",
                        advertise="mqtts://broker.example.net")  # fmt: skip
    assert bridge.tls is not None and bridge.tls_files is not None
    cert = x509.load_pem_x509_certificate(bridge.tls_files.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "broker.example.net" in names.get_values_for_type(x509.DNSName)  # the name devices dial
    assert bridge.tls_files.ca.read_bytes() == hub.fleet.ca.ca_pem


def test_plain_mqtt_to_a_network_broker_needs_insecure_and_is_warned_about(
    hub: HubServices, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(BadInput, match="--mqtt-advertise"):
        MqttBridge(hub, "mqtt://127.0.0.1:1883", directory=tmp_path / "mqtt", advertise="mqtt://10.0.0.5:1883")
    with caplog.at_level(logging.WARNING, logger="hub.control.mqtt"):
        bridge = MqttBridge(hub, "mqtt://10.0.0.5:1883", directory=tmp_path / "mqtt", insecure=True)
    assert bridge.tls is None
    assert "plain MQTT to mqtt://10.0.0.5:1883" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hub.control.mqtt"):
        MqttBridge(hub, "mqtt://127.0.0.1:1883", directory=tmp_path / "mqtt")  # loopback: nothing to say
    assert "plain MQTT" not in caplog.text
