"""HTTPS scoring endpoints (`sslEnabled`), from `hub deploy` to a real `agent run` and its runtime: certificates
the hub CA issues for a key made on the device, the user's own pair, key and token auth over TLS, and bad ssl
configs refused before anything is uploaded."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.profiler import profile_service
from agent.state import ServiceRecord
from agent.supervisor import check_healthy
from agent.telemetry import scrape
from hub.sdk import Webservice, Workspace
from protos.edgeport.v1 import agent_pb2
from tests.integration.registry_support import CliResult, hub_cli, hub_token, remember_hub
from tests.support import PYTHON, REPO, Processes, free_port, wait_for

SCORE_PY = "def init():\n    pass\n\n\ndef run(raw):\n    return {'echo': raw}\n"


@dataclass
class Setup:
    """A hub, one enrolled agent, a registered model and the folder test files go to."""

    url: str
    device: str
    files: Path
    ic: Path
    agent_dir: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, procs: Processes) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("service-tls")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs.start([PYTHON, "-m", "hub", "serve", "--data-dir", str(tmp / "hub"), "--port", str(port),
                 "--grpc-port", str(free_port())], name="hub", cwd=REPO)  # fmt: skip
    wait_for(lambda: httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200, timeout=30, what="hub up")
    remember_hub(url, tmp / "hub")
    token = _ok(hub_cli(url, "device", "enroll", "tls-dev", "--output", "json")).json()["token"]
    agent = procs.start([PYTHON, "-m", "agent", "run", "--hub", f"127.0.0.1:{port}", "--data-dir", str(tmp / "agent"),
                         "--token", token, "--heartbeat-s", "2", "--telemetry-s", "1"], name="agent",
                        cwd=REPO)  # fmt: skip
    wait_for(lambda: "connected to hub" in procs.log(agent), timeout=30, what="agent connected")
    files = tmp / "files"
    (files / "src").mkdir(parents=True)
    (files / "src" / "score.py").write_text(SCORE_PY)
    ic = files / "ic.json"
    ic.write_text(json.dumps({"entryScript": "score.py", "sourceDirectory": "src"}))
    (files / "model").mkdir()
    (files / "model" / "weights.bin").write_bytes(b"weights")
    _ok(hub_cli(url, "model", "register", "-n", "tls-model", "-p", str(files / "model")))
    yield Setup(url, "tls-dev", files, ic, tmp / "agent")


def _ok(result: CliResult) -> CliResult:
    assert result.code == 0, f"exit {result.code}\nstdout:\n{result.out}\nstderr:\n{result.err}"
    return result


def _dc(setup: Setup, name: str, config: dict[str, Any]) -> Path:
    path = setup.files / f"{name}-dc.json"
    path.write_text(json.dumps(config))
    return path


def _deploy(setup: Setup, name: str, config: dict[str, Any]) -> dict[str, Any]:
    dc = _dc(setup, name, config)
    done = _ok(hub_cli(setup.url, "deploy", "-n", name, "-m", "tls-model:1", "--ic", str(setup.ic), "--dc", str(dc),
                       "--target", setup.device, "--timeout", "90", "--output", "json"))  # fmt: skip
    shown = done.json()
    assert shown["state"] == "Healthy", shown
    return shown


def _verifying(ca_pem: str) -> ssl.SSLContext:
    """A client context that trusts only `ca_pem` and checks the host name, as a careful client would."""
    return ssl.create_default_context(cadata=ca_pem)


def test_a_hub_issued_certificate_serves_https_with_key_auth(setup: Setup) -> None:
    shown = _deploy(setup, "tls-key", {"sslEnabled": True, "authEnabled": True})
    (device,) = shown["devices"]
    uri = device["scoring_uri"]
    assert uri.startswith("https://127.0.0.1:") and uri.endswith("/score"), uri
    assert shown["tls"]["issuer"] == "hub"
    ca_pem = _ok(hub_cli(setup.url, "service", "show", "tls-key", "--ca")).out
    assert ca_pem.startswith("-----BEGIN CERTIFICATE-----") and ca_pem == shown["tls"]["ca_pem"]
    table = _ok(hub_cli(setup.url, "service", "show", "tls-key")).out
    assert "https, certificates from the hub CA" in table and uri in table, table
    key = _ok(hub_cli(setup.url, "service", "keys", "-n", "tls-key", "--output", "json")).json()["primaryKey"]

    reply = httpx.post(uri, json={"x": 1}, headers={"Authorization": f"Bearer {key}"}, verify=_verifying(ca_pem),
                       timeout=10)  # fmt: skip
    assert reply.status_code == 200 and reply.json() == {"echo": '{"x":1}'}, reply.text
    assert httpx.post(uri, json={"x": 1}, verify=_verifying(ca_pem), timeout=10).status_code == 401
    # Plain HTTP on the port is refused (the runtime says to use https), and a client trusting only the system's
    # CAs does not accept the certificate.
    plain = httpx.post(uri.replace("https://", "http://"), json={"x": 1}, timeout=10)
    assert plain.status_code == 400 and "HTTPS" in plain.text, plain.text
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.post(uri, json={"x": 1}, timeout=10)
    # The runtime's key was made on the device and stays there, readable by its owner only.
    key_file = setup.agent_dir / "services" / "tls-key" / "tls" / "runtime.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    served = x509.load_pem_x509_certificate((key_file.parent / "runtime.crt").read_bytes())
    assert served.issuer.rfc4514_string() == "CN=Edgeport hub CA"
    assert served.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=300)

    # The agent still reads the runtime's figures (over TLS) and they reach the hub.
    def counted() -> bool:
        shown = hub_cli(setup.url, "device", "telemetry", setup.device, "--service", "tls-key", "--metric",
                        "runtime.requests_total", "--output", "json")  # fmt: skip
        return shown.code == 0 and any(point["value"] >= 1 for point in shown.json())

    wait_for(counted, timeout=30, what="runtime.requests_total of the https runtime at the hub")


def test_token_auth_over_https_with_a_token_from_the_cli_and_the_sdk(setup: Setup) -> None:
    shown = _deploy(setup, "tls-token", {"sslEnabled": True, "tokenAuthEnabled": True})
    uri = shown["devices"][0]["scoring_uri"]
    context = _verifying(shown["tls"]["ca_pem"])
    token = _ok(hub_cli(setup.url, "service", "token", "-n", "tls-token")).out.strip()
    reply = httpx.post(uri, json={"x": 2}, headers={"Authorization": f"Bearer {token}"}, verify=context, timeout=10)
    assert reply.status_code == 200, reply.text
    bad = httpx.post(uri, json={"x": 2}, headers={"Authorization": f"Bearer {token}x"}, verify=context, timeout=10)
    assert bad.status_code == 401
    described = _ok(hub_cli(setup.url, "service", "token", "-n", "tls-token", "--expires", "2h", "--output", "json"))
    assert described.json()["tokenType"] == "Bearer"
    assert 7100 < described.json()["expiryOn"] - dt.datetime.now(dt.UTC).timestamp() <= 7200

    service = Webservice(Workspace(setup.url, token=hub_token(setup.url)), "tls-token")
    sdk_token, expiry = service.get_token()
    assert expiry.tzinfo is not None and dt.timedelta(minutes=59) < expiry - dt.datetime.now(dt.UTC)
    ok = httpx.post(uri, json={"x": 3}, headers={"Authorization": f"Bearer {sdk_token}"}, verify=context, timeout=10)
    assert ok.status_code == 200, ok.text
    assert service.run({"x": 4}) == {"echo": '{"x": 4}'}  # the SDK verifies against the hub CA and sends a token

    # A service with key auth has no tokens: said so, exit 2.
    refused = hub_cli(setup.url, "service", "token", "-n", "tls-key")
    assert refused.code == 2 and "does not use token auth" in refused.err, refused.err


def _self_signed(folder: Path) -> tuple[Path, Path]:
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
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return folder / "cert.pem", folder / "key.pem"


def test_the_users_own_certificate_and_key(setup: Setup) -> None:
    cert, key = _self_signed(setup.files / "user-tls")
    shown = _deploy(setup, "tls-user", {"sslEnabled": True, "sslCertificate": "user-tls/cert.pem",
                                        "sslKey": "user-tls/key.pem"})  # fmt: skip
    assert shown["tls"] == {"issuer": "user", "cname": ""}
    uri = shown["devices"][0]["scoring_uri"]
    reply = httpx.post(uri, json={"x": 5}, verify=_verifying(cert.read_text()), timeout=10)
    assert reply.status_code == 200, reply.text
    # The device opened the key the hub sealed to its runtime key: the same key, now 0600 in the service's folder.
    landed = setup.agent_dir / "services" / "tls-user" / "tls" / "user.key"
    assert landed.read_bytes() == key.read_bytes() and landed.stat().st_mode & 0o777 == 0o600
    refused = hub_cli(setup.url, "service", "show", "tls-user", "--ca")
    assert refused.code == 2 and "sslCertificate" in refused.err


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"sslEnabled": True, "sslCertificate": "user-tls/cert.pem"}, "sslCertificate is given without sslKey"),
        ({"sslEnabled": True, "sslKey": "user-tls/key.pem"}, "sslKey is given without sslCertificate"),
        ({"sslEnabled": True, "sslCertificate": "user-tls/cert.pem", "sslKey": "nowhere.pem"}, "sslKey file"),
        ({"sslEnabled": True, "sslCertificate": "user-tls/key.pem", "sslKey": "user-tls/key.pem"},
         "sslCertificate is not a PEM certificate"),
        ({"sslEnabled": True, "sslCertificate": "user-tls/cert.pem", "sslKey": "other/key.pem"},
         "sslKey does not belong to sslCertificate"),
        ({"sslCertificate": "user-tls/cert.pem", "sslKey": "user-tls/key.pem"}, 'need "sslEnabled": true'),
        ({"sslEnabled": "yes"}, "sslEnabled must be true or false"),
        ({"sslEnabled": True, "sslCname": "not a name"}, "sslCname 'not a name' is not a DNS name"),
    ],
)
def test_bad_ssl_configs_exit_2_naming_the_field(setup: Setup, config: dict[str, Any], message: str) -> None:
    _self_signed(setup.files / "user-tls")
    _self_signed(setup.files / "other")
    dc = _dc(setup, "bad-ssl", config)
    for args in (["deploy", "-n", "bad-ssl", "-m", "tls-model:1", "--target", setup.device],
                 ["service", "update", "-n", "tls-key"]):  # fmt: skip
        result = hub_cli(setup.url, *args, "--ic", str(setup.ic), "--dc", str(dc))
        assert result.code == 2 and message in result.err and str(dc) in result.err, result.err
        assert "Traceback" not in result.err
    assert hub_cli(setup.url, "service", "show", "bad-ssl").code == 2  # nothing was recorded


def test_an_unreadable_key_file_names_it(setup: Setup) -> None:
    """A folder where the key file should be: the CLI cannot read it and says which field and file."""
    cert, _ = _self_signed(setup.files / "user-tls")
    (setup.files / "key-dir.pem").mkdir(exist_ok=True)
    dc = _dc(setup, "unreadable", {"sslEnabled": True, "sslCertificate": str(cert), "sslKey": "key-dir.pem"})
    result = hub_cli(setup.url, "deploy", "-n", "unreadable", "-m", "tls-model:1", "--target", setup.device,
                     "--dc", str(dc))  # fmt: skip
    assert result.code == 2 and "sslKey file" in result.err and "key-dir.pem cannot be read" in result.err, result.err


def test_the_agents_own_calls_reach_an_https_runtime_with_token_auth(tmp_path: Path, processes: Processes) -> None:
    """Profiling and metrics, which the agent does itself, over TLS and with a token it mints from the manifest."""
    cert, key = _self_signed(tmp_path / "tls")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text(SCORE_PY)
    (tmp_path / "model").mkdir()
    port = free_port()
    runtime = processes.start(
        [PYTHON, "-m", "runtimes", "serve", "--model-dir", str(tmp_path / "model"), "--entry-script", "score.py",
         "--source-dir", str(tmp_path / "src"), "--name", "svc", "--port", str(port), "--grpc-port",
         str(free_port()), "--auth", "token", "--tls-cert", str(cert), "--tls-key", str(key)],
        name="runtime", env={"EDGEPORT_TOKEN_SECRET": "s3cret"},
    )  # fmt: skip
    wait_for(lambda: check_healthy(port, tls=True), timeout=30, what=f"runtime up: {processes.log(runtime)}")
    manifest = agent_pb2.ServiceManifest(name="svc", generation=1)
    manifest.auth.mode, manifest.auth.token_secret = "token", "s3cret"
    manifest.tls.enabled = True
    request = agent_pb2.ProfileRequest(request_id="p", service="svc", requests=10, payload=b'{"x": 1}')
    profiled = profile_service(ServiceRecord(name="svc", generation=1, manifest=manifest, port=port), request)
    assert profiled.message.startswith("10 ok, 0 failed"), profiled.message
    stats = scrape(port)
    assert stats is not None and stats.requests >= 10
