"""HTTPS for a service's runtime: its key made here, its certificate from the hub (or the user's pair, sealed).

The runtime's private key is made on the device and never leaves it (`<service folder>/tls/runtime.key`,
0600, owned by the runtime's user). The agent reports a CSR for it, signed with the device's enrolled key
(`TlsRequest`); the hub answers in a later DesiredState with a certificate for that key, or, when the
deployment gives its own `sslCertificate`/`sslKey`, with the user's key encrypted to the CSR's public key
(ECDH P-256 → HKDF-SHA256 → AES-256-GCM), which only this device can open. Until then the service waits.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from protos.edgeport.v1 import agent_pb2

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

# `cryptography` is imported where it is used: an agent without TLS services never loads it (idle RSS).

# Both sides use these: the proof's domain and the key-sealing scheme's label (see TlsRequest/TlsSettings).
TLS_REQUEST_DOMAIN = b"edgeport.v1.TlsRequest\0"
SEALED_KEY_INFO = b"edgeport.v1.TlsSettings.encrypted_key"
RENEW_BEFORE = dt.timedelta(days=30)  # a certificate this close to its end is asked for again
WAITING = "waiting for the hub to issue its TLS certificate"


class ServiceTlsError(Exception):
    """The TLS material the hub sent cannot be used (named in the service's status)."""


@dataclass(frozen=True)
class TlsFiles:
    """The certificate and key files a runtime is started with (`--tls-cert`, `--tls-key`)."""

    cert: Path
    key: Path


def tls_dir(service_dir: Path) -> Path:
    """Where a service's key and certificate live: one folder for every generation of the service."""
    return Path(service_dir) / "tls"


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)  # O_CREAT's mode only applies to a new file
    tmp.replace(path)


def runtime_key(service_dir: Path) -> ec.EllipticCurvePrivateKey:
    """The service's runtime key (EC P-256): made on first use, kept 0600 in the service's tls folder."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    folder = tls_dir(service_dir)
    path = folder / "runtime.key"
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    new_key = ec.generate_private_key(ec.SECP256R1())
    pem = new_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    _write(path, pem, 0o600)
    return new_key


def _public_der(key: ec.EllipticCurvePublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def tls_request(service: str, key: ec.EllipticCurvePrivateKey, host: str, identity: Path) -> agent_pb2.TlsRequest:
    """A CSR for `key` naming `host` (what the scoring URI says), signed as the device (`identity` folder)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service[:64])]))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .sign(key, hashes.SHA256())
    )
    csr_pem = csr.public_bytes(serialization.Encoding.PEM)
    device_key = serialization.load_pem_private_key((identity / "device.key").read_bytes(), password=None)
    if not isinstance(device_key, ec.EllipticCurvePrivateKey):
        raise ServiceTlsError("the device key is not an EC key: it cannot sign a TLS request")
    proof = device_key.sign(TLS_REQUEST_DOMAIN + service.encode() + b"\0" + csr_pem, ec.ECDSA(hashes.SHA256()))
    return agent_pb2.TlsRequest(
        csr_pem=csr_pem, device_certificate_pem=(identity / "device.crt").read_bytes(), proof=proof
    )


def open_sealed_key(sealed: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """The user's key PEM the hub sealed to `key`'s public key (see SEALED_KEY_INFO); ServiceTlsError if it fails."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    if len(sealed) < 65 + 12 + 16:
        raise ServiceTlsError("the sealed TLS key from the hub is too short")
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sealed[:65])
        shared = key.exchange(ec.ECDH(), peer)
        aes_key = HKDF(hashes.SHA256(), 32, salt=None, info=SEALED_KEY_INFO).derive(shared)
        return AESGCM(aes_key).decrypt(sealed[65:77], sealed[77:], SEALED_KEY_INFO)
    except (ValueError, InvalidTag):
        raise ServiceTlsError("the sealed TLS key from the hub does not open with this device's key") from None


def usable_files(m: agent_pb2.ServiceManifest, service_dir: Path, key: ec.EllipticCurvePrivateKey) -> TlsFiles | None:
    """The files to start `m`'s runtime with, written from the manifest; None while the hub has not answered
    this key's request (no certificate for it yet, or one close to its end). ServiceTlsError: unusable."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    tls = m.tls
    if not tls.certificate_pem:
        return None
    try:
        certs = x509.load_pem_x509_certificates(tls.certificate_pem)
    except ValueError:
        raise ServiceTlsError("the TLS certificate from the hub is not PEM") from None
    folder = tls_dir(service_dir)
    if tls.user_certificate:
        if not tls.encrypted_key:
            return None  # the user's key comes sealed to this device's key once the hub has its request
        try:
            key_pem = open_sealed_key(tls.encrypted_key, key)
        except ServiceTlsError:
            return None  # sealed to an earlier key of this service (its folder was remade): ask again
        user_key = serialization.load_pem_private_key(key_pem, password=None)
        if _public_der(user_key.public_key()) != _public_der(certs[0].public_key()):  # type: ignore[arg-type]
            raise ServiceTlsError("the sealed TLS key does not belong to the service's sslCertificate")
        _write(folder / "user.key", key_pem, 0o600)
        _write(folder / "user.crt", tls.certificate_pem, 0o644)
        return TlsFiles(folder / "user.crt", folder / "user.key")
    if _public_der(certs[0].public_key()) != _public_der(key.public_key()):  # type: ignore[arg-type]
        return None  # issued for an earlier key of this service: ask again
    if certs[0].not_valid_after_utc - dt.datetime.now(dt.UTC) < RENEW_BEFORE:
        return None
    _write(folder / "runtime.crt", tls.certificate_pem, 0o644)
    return TlsFiles(folder / "runtime.crt", folder / "runtime.key")
