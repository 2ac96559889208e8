"""When `hub serve` speaks TLS: HTTPS on a network address by default, plain only with --insecure; bad TLS
options and plain MQTT to a network broker are refused in one line, exit 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hub.serve_config import AgentChannelConfig, HubConfig
from tests.support import PYTHON


@pytest.mark.parametrize(
    ("host", "insecure", "sans", "https"),
    [
        ("127.0.0.1", False, (), False),  # the quick start: plain HTTP on loopback, as always
        ("localhost", False, (), False),
        ("::1", False, (), False),
        ("0.0.0.0", False, (), True),
        ("192.168.1.20", False, (), True),
        ("hub.example.net", False, (), True),
        ("0.0.0.0", True, (), False),
        ("127.0.0.1", False, ("hub.example.net",), True),  # names asked for: HTTPS on loopback too
    ],
)
def test_https_by_default_off_loopback(host: str, insecure: bool, sans: tuple[str, ...], https: bool) -> None:
    config = HubConfig(Path("d"), host=host, agents=AgentChannelConfig(insecure=insecure), tls_sans=sans)
    assert config.https is https
    assert config.plain_on_network is (insecure and host == "0.0.0.0")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-cert", "missing.pem", "--tls-key", "missing.key"], "--tls-cert missing.pem: no such file"),
        (["--tls-san", "a b"], "--tls-san 'a b': expected a host name or an IP address"),
        (["--tls-cert", "/etc/hostname", "--tls-key", "/etc/hostname"], "--tls-cert /etc/hostname / --tls-key "
         "/etc/hostname: cannot serve TLS with them"),
        (["--mqtt", "mqtt://10.0.0.5:1883"], "--mqtt 'mqtt://10.0.0.5:1883': plain MQTT to a broker on another "
         "machine sends the broker password in the clear"),
        (["--mqtt", "mqtts://127.0.0.1:8883", "--mqtt-advertise", "mqtt://broker.example.net"],
         "--mqtt-advertise 'mqtt://broker.example.net': plain MQTT"),
    ],
)
def test_bad_tls_options_are_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    argv = [PYTHON, "-m", "hub", "serve", "--data-dir", str(tmp_path / "hub"), "--port", "0", "--grpc-port", "0"]
    done = subprocess.run([*argv, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: {message}") and done.stderr.count("\n") == 1, done.stderr
