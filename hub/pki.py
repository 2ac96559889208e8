"""The hub's certificate authority: a CA made on first start, the gRPC server certificate, CSR signing.

Files live in `DATA_DIR/pki/` (keys 0600). Devices get certificates with CN = device id;
the token pins the CA by the sha256 of its DER encoding.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hub.errors import BadInput, StorageError
from hub.serve_config import UNSPECIFIED_HOSTS

CA_DAYS = 3650
LEAF_DAYS = 397
# The key types that can sign certificates (CertificateIssuerPrivateKeyTypes): the hub makes P-256 keys,
# but a ca.key of any of these types signs as well.
_ISSUER_KEY_TYPES = (
    ec.EllipticCurvePrivateKey,
    rsa.RSAPrivateKey,
    dsa.DSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate the CA signed for a device."""

    pem: bytes
    serial: str  # hex
    sha256: str  # hex of the DER


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file atomically, mode 0600."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    fmt = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def certificate_sha256(cert_pem: bytes) -> str:
    """Hex sha256 of a PEM certificate's DER encoding (the fingerprint tokens pin)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def certificate_serial(cert_pem: bytes) -> str:
    """Hex serial number of a PEM certificate."""
    return format(x509.load_pem_x509_certificate(cert_pem).serial_number, "x")


class CertificateAuthority:
    """The hub CA in `pki_dir`: created once, reused on every start."""

    def __init__(self, pki_dir: Path) -> None:
        self.dir = Path(pki_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        key_path, cert_path = self.dir / "ca.key", self.dir / "ca.crt"
        self._key: CertificateIssuerPrivateKeyTypes
        if key_path.exists() and cert_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, _ISSUER_KEY_TYPES):  # e.g. an X25519 key: it cannot sign anything
                kind = type(key).__name__
                raise StorageError(f"{key_path} is not a signing key ({kind}); the CA signs certificates with it")
            self._key = key
            self.ca_pem = cert_path.read_bytes()
        else:
            new_key = ec.generate_private_key(ec.SECP256R1())
            self._key = new_key
            self.ca_pem = self._self_signed()
            write_private(key_path, _key_pem(new_key))
            cert_path.write_bytes(self.ca_pem)
        self._ca = x509.load_pem_x509_certificate(self.ca_pem)
        self.ca_sha256 = certificate_sha256(self.ca_pem)

    def _self_signed(self) -> bytes:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Edgeport hub CA")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def _sign(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        return self.issue(builder, not_before=now - dt.timedelta(minutes=5), days=LEAF_DAYS)

    def issue(self, builder: x509.CertificateBuilder, *, not_before: dt.datetime, days: int) -> x509.Certificate:
        """Sign a leaf certificate (subject, key and purpose already in `builder`), valid `days` from `not_before`."""
        return (
            builder.issuer_name(self._ca.subject)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_before + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    def server_credentials(self, hosts: list[str] | None = None) -> tuple[bytes, bytes]:
        """(key PEM, cert PEM) for the gRPC port, SANs 127.0.0.1/localhost/hostname (+hosts); kept across starts."""
        names = sorted({"127.0.0.1", "localhost", socket.gethostname(), *(hosts or [])} - UNSPECIFIED_HOSTS)
        key_path, cert_path = self.dir / "server.key", self.dir / "server.crt"
        if key_path.exists() and cert_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            have = _san_names(cert)
            fresh = cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
            if set(names) <= have and fresh and cert.issuer == self._ca.subject:
                return key_path.read_bytes(), cert_path.read_bytes()
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        cert = self._sign(
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgeport-hub")]))
            .public_key(key.public_key())
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        write_private(key_path, _key_pem(key))
        cert_path.write_bytes(pem)
        return key_path.read_bytes(), pem

    def hub_names(self) -> set[str]:
        """The names and addresses the hub's own server certificate holds (what its clients reach it by)."""
        cert_path = self.dir / "server.crt"
        try:
            return _san_names(x509.load_pem_x509_certificate(cert_path.read_bytes()))
        except (OSError, ValueError):
            return set()

    def sign_server_key(self, public_key: ec.EllipticCurvePublicKey, name: str, hosts: list[str]) -> bytes:
        """A server certificate (PEM) for a key held elsewhere (a service's runtime on a device), for `hosts`.

        CN `name`; SANs: each host as an IP address or DNS name; usable only to serve TLS (EKU serverAuth)."""
        sans = _general_names(hosts)
        if not sans:
            raise BadInput("a server certificate needs at least one host name or address")
        cert = self._sign(
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])]))
            .public_key(public_key)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def sign_csr(self, csr_pem: bytes, device_id: str) -> IssuedCertificate:
        """Sign a device CSR; the CN is always `device_id`, whatever the CSR asked for."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise BadInput(f"enrollment CSR is not a PEM PKCS#10 request: {exc}") from None
        try:
            valid = csr.is_signature_valid
        except (InvalidSignature, ValueError):
            valid = False
        if not valid:
            raise BadInput("enrollment CSR signature does not verify")
        cert = self._sign(
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
            .public_key(csr.public_key())
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        return IssuedCertificate(pem=pem, serial=format(cert.serial_number, "x"), sha256=certificate_sha256(pem))

    def verify(self, cert_pem: bytes) -> x509.Certificate | None:
        """The certificate if this CA signed it and it is within its validity, else None."""
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            cert.verify_directly_issued_by(self._ca)
        except (ValueError, TypeError, InvalidSignature):
            return None
        now = dt.datetime.now(dt.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return None
        return cert


def _general_names(hosts: list[str]) -> list[x509.GeneralName]:
    """Each host as an IPAddress SAN when it is an address, else a DNSName, without repeats."""
    out: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


def _san_names(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(ext.get_values_for_type(x509.DNSName))


def common_name(cert: x509.Certificate) -> str:
    """The subject CN of a certificate ('' when absent)."""
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""
