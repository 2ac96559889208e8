"""HTTPS on a real runtime (--tls-cert/--tls-key): /score with key and token auth, V2 gRPC over TLS,
plain HTTP to the TLS port answered plainly, bad certificate files refused at the command line."""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from simulators.models import digits_data
from tests.integration.runtime_support import Runtime, http, start_runtime
from tests.support import PYTHON, REPO, Processes

pytestmark = pytest.mark.timeout(120)

KEYS = {"EDGEPORT_PRIMARY_KEY": "primary-key-1", "EDGEPORT_SECONDARY_KEY": "secondary-key-2"}
SECRET = "token-secret-xyz"


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key, as PEM files."""
    d = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = d / "cert.pem", d / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def _start(
    procs: Processes, digits_model: Path, cert_files: tuple[Path, Path], auth: str, env: dict[str, str]
) -> Runtime:
    cert, key = cert_files
    return start_runtime(
        procs,
        "--model-dir",
        str(digits_model.parent),
        "--onnx",
        "model.onnx",
        "--name",
        "svc",
        "--auth",
        auth,
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        env=env,
        cafile=cert,
    )


def _score_body() -> bytes:
    return json.dumps({"data": digits_data()[0][:2].tolist()}).encode()


def test_https_score_with_key_auth_and_grpc_over_tls(
    procs: Processes, digits_model: Path, cert_files: tuple[Path, Path]
) -> None:
    rt = _start(procs, digits_model, cert_files, "key", KEYS)
    assert rt.url.startswith("https://") and "listening: https://" in rt.log
    cert = cert_files[0]
    body = _score_body()
    assert http("POST", rt.url + "/score", body, cafile=cert)[0] == 401
    assert http("POST", rt.url + "/score", body, {"Authorization": "Bearer wrong"}, cafile=cert)[0] == 401
    for key in KEYS.values():
        status, _, resp = http("POST", rt.url + "/score", body, {"Authorization": f"Bearer {key}"}, cafile=cert)
        assert status == 200 and len(json.loads(resp)["label"]) == 2
    assert http("GET", rt.url + "/v2/health/ready", cafile=cert)[0] == 200
    # the V2 gRPC port speaks TLS with the same certificate
    client = tgrpc.InferenceServerClient(f"localhost:{rt.grpc_port}", ssl=True, root_certificates=str(cert))
    inp = tgrpc.InferInput("X", [1, 64], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 64), np.float32))
    result = client.infer("svc", [inp], headers={"authorization": "Bearer primary-key-1"})
    assert result.as_numpy("label").shape == (1,)
    plain = tgrpc.InferenceServerClient(f"localhost:{rt.grpc_port}")
    with pytest.raises(Exception):  # noqa: B017 - any failure: a plaintext client cannot talk to a TLS port
        plain.is_server_live(client_timeout=3)


def test_https_score_with_token_auth(procs: Processes, digits_model: Path, cert_files: tuple[Path, Path]) -> None:
    env = {"EDGEPORT_TOKEN_SECRET": SECRET}
    rt = _start(procs, digits_model, cert_files, "token", env)
    token = subprocess.run(
        [PYTHON, "-m", "runtimes", "token", "--service", "svc"],
        env={"EDGEPORT_TOKEN_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    cert = cert_files[0]
    body = _score_body()
    status, _, resp = http("POST", rt.url + "/score", body, {"Authorization": f"Bearer {token}"}, cafile=cert)
    assert status == 200 and len(json.loads(resp)["label"]) == 2
    assert http("POST", rt.url + "/score", body, {"Authorization": f"Bearer {token}x"}, cafile=cert)[0] == 401


def test_plain_http_to_the_tls_port_fails_cleanly(
    procs: Processes, digits_model: Path, cert_files: tuple[Path, Path]
) -> None:
    rt = _start(procs, digits_model, cert_files, "none", {})
    status, _, resp = http("GET", f"http://127.0.0.1:{rt.port}/")
    assert status == 400 and "use https://" in json.loads(resp)["error"]
    # a client that does not trust the certificate fails its handshake; the runtime keeps serving
    with pytest.raises(OSError):
        http("GET", rt.url + "/")
    # garbage after a TLS record type fails the handshake and is dropped
    with socket.create_connection(("127.0.0.1", rt.port), timeout=10) as s:
        s.sendall(b"\x16\x03\x01\x00\x05hello")
        assert s.recv(100) == b""
    assert http("GET", rt.url + "/", cafile=cert_files[0])[0] == 200
    assert "Traceback" not in rt.log


@pytest.mark.parametrize(
    ("which", "message"),
    [("missing", "is not a file"), ("garbage", "not a PEM certificate"), ("only-cert", "go together")],
)
def test_bad_certificate_files_exit_2(tmp_path: Path, cert_files: tuple[Path, Path], which: str, message: str) -> None:
    cert, key = cert_files
    if which == "missing":
        tls = ["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(key)]
    elif which == "garbage":
        (tmp_path / "bad.pem").write_text("not a certificate\n")
        tls = ["--tls-cert", str(tmp_path / "bad.pem"), "--tls-key", str(key)]
    else:
        tls = ["--tls-cert", str(cert)]
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "model.onnx").write_bytes(b"x")
    proc = subprocess.run(
        [PYTHON, "-m", "runtimes", "serve", "--model-dir", str(model_dir), "--onnx", "model.onnx", *tls],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
