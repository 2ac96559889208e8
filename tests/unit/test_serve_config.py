"""`HubConfig`: what `hub serve` is told, checked before anything starts; one check for bind-to-all hosts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from cryptography import x509

from hub.errors import BadInput
from hub.pki import CertificateAuthority
from hub.serve_config import AgentChannelConfig, HubConfig, advertised_host, is_unspecified_host


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"grpc_port": 70000}, "--grpc-port must be 0 (any free port) or 1-65535, got 70000"),
        ({"heartbeat_interval_s": 0}, "--heartbeat-interval must be 1-3600 seconds, got 0"),
        ({"reconnects_per_s": float("nan")}, "--reconnect-rate must be 1-1000000 reconnections per second, got nan"),
        ({"telemetry_retention_s": 0}, "--telemetry-retention must be positive, got 0 s"),
        ({"artifact_url": "cdn.example"}, "--artifact-url 'cdn.example': expected http://HOST:PORT or https://..."),
    ],
)
def test_agent_channel_settings_out_of_range_name_the_option(settings: dict[str, object], message: str) -> None:
    with pytest.raises(BadInput) as caught:
        AgentChannelConfig(**settings)  # type: ignore[arg-type]
    assert caught.value.message == message


def test_hub_config_defaults_and_port_check(tmp_path: Path) -> None:
    config = HubConfig(data_dir=tmp_path)
    assert (config.host, config.port, config.agents.grpc_port, config.mqtt) == ("127.0.0.1", 7070, 7071, None)
    with pytest.raises(BadInput, match="--port must be 0"):
        HubConfig(data_dir=tmp_path, port=-1)


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::", "[::]"])
def test_bind_to_all_hosts_are_advertised_by_name(host: str) -> None:
    assert is_unspecified_host(host)
    assert advertised_host(host) == socket.gethostname()


def test_a_reachable_host_is_advertised_as_given() -> None:
    assert not is_unspecified_host("10.0.0.5")
    assert advertised_host("10.0.0.5") == "10.0.0.5"


def test_the_grpc_certificate_names_no_bind_to_all_address(tmp_path: Path) -> None:
    _, cert_pem = CertificateAuthority(tmp_path / "pki").server_credentials(["::", "0.0.0.0", "10.0.0.5"])
    sans = x509.load_pem_x509_certificate(cert_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    ips = {str(ip) for ip in sans.value.get_values_for_type(x509.IPAddress)}
    assert ips == {"127.0.0.1", "10.0.0.5"}
