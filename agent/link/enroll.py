"""The one-time enrollment exchange: token + CSR for a device certificate (POST /api/v1/enroll).

Token format: `ep1.<token_id>.<secret>.<ca_sha256_hex>`. The secret never travels: the
agent proves it holds it with HMAC-SHA256(secret, csr_pem). The hub CA returned must hash
to the pin in the token (sha256 of its DER), so the agent trusts the hub on first contact
without a leap of faith; the hub's manifest-signing certificate must come from that CA too
(agent/trust.py). The device key is generated here and never leaves the device
(`DATA_DIR/identity/device.key`, mode 0600). `cryptography`'s X.509 and key generation are
imported only when enrolling, to keep the daemon small (it needs only Ed25519 verification).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from agent.state import Identity
from agent.trust import DesiredStateRefused, check_signing_certificate
from protos.edgeport.v1 import agent_pb2

AGENT_VERSION = "0.1.0"
CA_PATH = "/api/v1/ca"  # the hub CA certificate (PEM), open to anyone: what the token's pin is checked against


class EnrollError(Exception):
    """Enrollment was refused or could not be done (message says why; exit code 2 for a bad token)."""

    def __init__(self, message: str, *, bad_input: bool = False) -> None:
        super().__init__(message)
        self.bad_input = bad_input


@dataclass(frozen=True)
class Token:
    """A parsed enrollment token."""

    token_id: str
    secret: str
    ca_sha256: str


def parse_token(token: str) -> Token:
    """Split `ep1.<token_id>.<secret>.<ca_sha256_hex>`; EnrollError(bad_input) names what is wrong."""
    parts = token.strip().split(".")
    if len(parts) != 4 or parts[0] != "ep1":
        raise EnrollError("--token: not an Edgeport enrollment token (expected ep1.<id>.<secret>.<ca-sha256>)",
                          bad_input=True)  # fmt: skip
    _, token_id, secret, pin = parts
    if not token_id or not secret:
        raise EnrollError("--token: the token id or secret part is empty", bad_input=True)
    if len(pin) != 64 or any(c not in "0123456789abcdef" for c in pin.lower()):
        raise EnrollError("--token: the CA fingerprint part must be 64 hex characters", bad_input=True)
    return Token(token_id, secret, pin.lower())


def identity_dir(data_dir: Path) -> Path:
    """Where key, certificate and CA live."""
    return Path(data_dir) / "identity"


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _pinned_context(hub: str, netloc: str, ca_sha256: str, timeout_s: float) -> ssl.SSLContext:
    """A TLS context trusting only the hub CA the token pins. The CA is fetched over a connection not yet
    verified (GET /api/v1/ca, public anyway) and accepted only if its sha256 is the pin; nothing secret
    travels before the hub proved, by a certificate chaining to that CA, that it holds the CA's key."""
    probe = http.client.HTTPSConnection(netloc, timeout=timeout_s, context=ssl._create_unverified_context())
    try:
        probe.request("GET", CA_PATH)
        resp = probe.getresponse()
        ca_pem = resp.read()
        if resp.status != 200:
            raise EnrollError(f"the hub at {hub} did not give its CA (GET {CA_PATH}: HTTP {resp.status})")
    except (OSError, http.client.HTTPException) as exc:
        raise EnrollError(f"cannot reach the hub at {hub} to enroll: {exc}") from None
    finally:
        probe.close()
    if not hmac.compare_digest(_pem_sha256(ca_pem), ca_sha256):
        raise EnrollError(
            f"the hub at {hub} presented CA sha256:{_pem_sha256(ca_pem)}, but the token pins sha256:{ca_sha256}; "
            "refusing to trust it (wrong hub, or someone in between)"
        )
    return ssl.create_default_context(cadata=ca_pem.decode("ascii"))


def _pem_sha256(pem: bytes) -> str:
    """Hex sha256 of a PEM certificate's DER ('' when it is not one)."""
    try:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))).hexdigest()
    except (ValueError, UnicodeDecodeError):
        return ""


def _post(hub: str, body: bytes, timeout_s: float, ca_sha256: str) -> tuple[int, bytes]:
    url = urllib.parse.urlsplit(hub if "://" in hub else f"http://{hub}")
    conn: http.client.HTTPConnection
    if url.scheme == "https":  # the hub CA is pinned by the token, so no system CA is needed (or trusted)
        context = _pinned_context(hub, url.netloc, ca_sha256, timeout_s)
        conn = http.client.HTTPSConnection(url.netloc, timeout=timeout_s, context=context)
    else:
        conn = http.client.HTTPConnection(url.netloc, timeout=timeout_s)
    try:
        conn.request("POST", "/api/v1/enroll", body=body, headers={"Content-Type": "application/x-protobuf"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise EnrollError(f"cannot reach the hub at {hub} to enroll: {exc}") from None
    finally:
        conn.close()


def enroll(
    hub: str, token: str, data_dir: Path, hardware: agent_pb2.HardwareInventory, timeout_s: float = 30.0
) -> Identity:
    """Exchange `token` for a device identity, store key/cert/CA under `data_dir`, return the Identity."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    parsed = parse_token(token)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"edgeport-agent-{parsed.token_id}")]))
        .sign(key, hashes.SHA256())
    )
    csr_pem = csr.public_bytes(serialization.Encoding.PEM)
    request = agent_pb2.EnrollRequest(
        token_id=parsed.token_id,
        csr_pem=csr_pem,
        proof=hmac.new(parsed.secret.encode(), csr_pem, hashlib.sha256).digest(),
        agent_version=AGENT_VERSION,
        hardware=hardware,
    )
    status, body = _post(hub, request.SerializeToString(), timeout_s, parsed.ca_sha256)
    if status != 200:
        try:
            message = json.loads(body)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = body[:300].decode(errors="replace")
        raise EnrollError(f"the hub refused enrollment (HTTP {status}): {message}")
    response = agent_pb2.EnrollResponse.FromString(body)

    ca = x509.load_pem_x509_certificate(response.ca_pem)
    ca_sha256 = hashlib.sha256(ca.public_bytes(serialization.Encoding.DER)).hexdigest()
    if not hmac.compare_digest(ca_sha256, parsed.ca_sha256):
        raise EnrollError(
            f"the hub at {hub} presented CA sha256:{ca_sha256}, but the token pins sha256:{parsed.ca_sha256}; "
            "refusing to trust it (wrong hub, or someone in between)"
        )
    cert = x509.load_pem_x509_certificate(response.certificate_pem)
    try:
        cert.verify_directly_issued_by(ca)
    except Exception as exc:  # InvalidSignature, ValueError, TypeError: any means "not from this CA"
        raise EnrollError(f"the certificate the hub returned was not issued by its CA: {exc!r}") from None
    if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        raise EnrollError("the certificate the hub returned is not for this agent's key")
    signing_key = ""
    if response.signing_certificate:  # the key desired state is signed with: certified by the pinned CA
        try:
            signing_key = check_signing_certificate(response.signing_certificate, response.ca_pem).to_json()
        except DesiredStateRefused as exc:
            raise EnrollError(f"the hub's manifest-signing certificate: {exc.reason}") from None

    folder = identity_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(folder / "device.key", key_pem, 0o600)
    _write(folder / "device.crt", response.certificate_pem, 0o644)
    _write(folder / "ca.crt", response.ca_pem, 0o644)
    grpc_address = response.grpc_address
    host, _, port = grpc_address.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):  # hub bound to all interfaces: reach it where we reached the API
        api_host = urllib.parse.urlsplit(hub if "://" in hub else f"http://{hub}").hostname or "127.0.0.1"
        grpc_address = f"{api_host}:{port}"
    mqtt = {}
    if response.HasField("mqtt"):
        m = response.mqtt
        mqtt = {"url": m.url, "username": m.username, "password": m.password, "topic_prefix": m.topic_prefix}
    return Identity(
        device_id=response.device_id,
        hub=hub,
        grpc_address=grpc_address,
        credential=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        mqtt=mqtt,
        signing_key=signing_key,
        pull_token=response.pull_token,
    )
