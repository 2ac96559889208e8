"""HTTPS for services' runtimes: certificates per (service, device), issued for keys that never leave the device.

A manifest with `sslEnabled` carries TlsSettings(enabled). The agent makes the runtime's key on the device and
reports a CSR for it (DeploymentStatus.tls_request), signed with the device's enrolled key; the hub checks that
signature against the device's current certificate (so a broker publishing as the device gets nothing), then:

- hub-issued: its CA signs a server certificate for the CSR's key, naming the host the device's scoring URI
  uses (the CSR's SAN) and `sslCname`;
- the user's `sslCertificate`/`sslKey`: the certificate as given, and the key sealed to the CSR's public key
  (ECDH P-256, HKDF-SHA256, AES-256-GCM), so only that device can open it: a retained MQTT message, a mirror or
  the signed desired state's readers see ciphertext.

The result goes into that device's next DesiredState (`fill`), whose revision grows with it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import time
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hub.errors import BadInput
from hub.fleet import FleetService, row_cert
from hub.pki import certificate_sha256, common_name
from hub.store.deployments import DeploymentStore
from protos.edgeport.v1 import agent_pb2

# The agent uses the same two constants (agent/service_tls.py; hub and agent share no code).
TLS_REQUEST_DOMAIN = b"edgeport.v1.TlsRequest\0"
SEALED_KEY_INFO = b"edgeport.v1.TlsSettings.encrypted_key"
RENEW_BEFORE = dt.timedelta(days=30)
MAX_SANS = 8
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def source_of(m: agent_pb2.ServiceManifest) -> str:
    """What a certificate for `m` must answer: the hub with this cname, or this user certificate."""
    if m.tls.user_certificate:
        return "user:" + hashlib.sha256(m.tls.certificate_pem).hexdigest()
    return "hub:" + m.tls.cname


def seal(plaintext: bytes, public_key: ec.EllipticCurvePublicKey) -> bytes:
    """`plaintext` encrypted so that only the holder of `public_key`'s private key reads it (see module doc)."""
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    shared = ephemeral.exchange(ec.ECDH(), public_key)
    key = HKDF(hashes.SHA256(), 32, salt=None, info=SEALED_KEY_INFO).derive(shared)
    nonce = os.urandom(12)
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return point + nonce + AESGCM(key).encrypt(nonce, plaintext, SEALED_KEY_INFO)


class ServiceCertificates:
    """Answers devices' TLS requests and puts the answers into their desired state."""

    def __init__(self, store: DeploymentStore, fleet: FleetService) -> None:
        self.store = store
        self.fleet = fleet

    def digests(self, devices: list[str] | None = None) -> dict[str, dict[str, str]]:
        """device -> {service: digest of what it was issued}: part of each device's desired revision."""
        issued = self.store.certificates(devices)
        return {device: {service: row["sha256"] for service, row in rows.items()} for device, rows in issued.items()}

    def fill(self, state: agent_pb2.DesiredState, issued: dict[str, dict[str, Any]]) -> None:
        """Put the device's own TLS material (`issued`: service -> its certificate row) into the TLS services of
        its DesiredState, in place."""
        for m in state.services:
            if not m.tls.enabled:
                continue
            if not m.tls.user_certificate:
                m.tls.ca_pem = self.fleet.ca.ca_pem
            row = issued.get(m.name)
            if row is None or row["source"] != source_of(m):
                continue  # none yet (or for an earlier configuration): the device asks, and waits
            m.tls.certificate_pem = bytes(row["certificate_pem"])
            m.tls.encrypted_key = bytes(row["sealed_key"])

    def answer(self, device_id: str, status: agent_pb2.DeploymentStatus) -> bool:
        """Issue what `status.tls_request` asks for; True when something new was stored (the device's desired
        state changed), False when the stored answer already fits (it only needs sending again).

        BadInput: the request does not prove it comes from the device, or the service has no TLS now."""
        request = status.tls_request
        row = self.store.get(status.service)
        if row is None or row["state"] != "active" or row["generation"] != status.generation:
            return False  # about a generation that is no longer current: the device will ask for the new one
        blob = self.store.manifest(status.service, status.generation)
        m = agent_pb2.ServiceManifest.FromString(blob) if blob else None
        if m is None or not m.tls.enabled:
            raise BadInput(f"service {status.service} generation {status.generation} does not use TLS")
        csr = self._check(device_id, status.service, request)
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
            raise BadInput("TLS request: the runtime key must be an EC P-256 key")
        source = source_of(m)
        names = _requested_names(csr)
        # What the request asks for: its key and names (the CSR's bytes differ each time: ECDSA signs at random).
        spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        csr_sha256 = hashlib.sha256(spki + b"\0" + ",".join(names).encode()).hexdigest()
        old = self.store.certificate(status.service, device_id)
        # Answered already: unless a hub certificate nears its end (a user's certificate is renewed by its user).
        answered = old is not None and old["source"] == source and old["csr_sha256"] == csr_sha256
        if old is not None and answered and (m.tls.user_certificate or _fresh(old)):
            return False
        if m.tls.user_certificate:
            key_pem = str((row["spec"].get("deployment") or {}).get("sslKey") or "")
            if not key_pem:
                raise BadInput(f"service {status.service} has sslCertificate but no sslKey stored")
            certificate_pem, sealed_key = bytes(m.tls.certificate_pem), seal(key_pem.encode(), public_key)
        else:
            hosts = names + ([m.tls.cname] if m.tls.cname else [])
            # The hub's clients trust this CA for the hub's own names: a device must not get a certificate that
            # could pass for the hub (loopback names only reach the same machine).
            hub_names = self.fleet.ca.hub_names() - LOOPBACK
            for host in hosts:
                if host in hub_names:
                    raise BadInput(f"TLS request for {status.service}: {host} names the hub itself")
            certificate_pem = self.fleet.ca.sign_server_key(public_key, f"{status.service}@{device_id}", hosts)
            sealed_key = b""
        self.store.put_certificate(
            {
                "service": status.service,
                "device": device_id,
                "source": source,
                "csr_sha256": csr_sha256,
                "certificate_pem": certificate_pem,
                "sealed_key": sealed_key,
                "sha256": hashlib.sha256(certificate_pem + sealed_key).hexdigest(),
                "issued_at": time.time(),
            }
        )
        return True

    def _check(self, device_id: str, service: str, request: agent_pb2.TlsRequest) -> x509.CertificateSigningRequest:
        """The CSR, once it is shown to come from `device_id`: signed by the key of its current certificate."""
        device_cert = self.fleet.ca.verify(request.device_certificate_pem)
        standing = self.fleet.standing(device_id)
        if (
            device_cert is None
            or common_name(device_cert) != device_id
            or standing is None
            or certificate_sha256(request.device_certificate_pem) != row_cert(standing)
        ):
            raise BadInput(f"TLS request for {service}: not signed with device {device_id}'s current certificate")
        device_key = device_cert.public_key()
        try:
            if not isinstance(device_key, ec.EllipticCurvePublicKey):
                raise InvalidSignature
            message = TLS_REQUEST_DOMAIN + service.encode() + b"\0" + request.csr_pem
            device_key.verify(request.proof, message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise BadInput(f"TLS request for {service}: the device's signature does not verify") from None
        try:
            csr = x509.load_pem_x509_csr(request.csr_pem)
            valid = csr.is_signature_valid
        except (ValueError, InvalidSignature):
            valid = False
        if not valid:
            raise BadInput(f"TLS request for {service}: the CSR is not a valid PEM PKCS#10 request")
        return csr


def _requested_names(csr: x509.CertificateSigningRequest) -> list[str]:
    """The IP addresses and DNS names the CSR asks for (the host of the device's scoring URI), at most MAX_SANS."""
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)] + list(ext.get_values_for_type(x509.DNSName))
    for name in names:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            if not name or len(name) > 253 or "*" in name:
                raise BadInput(f"TLS request: {name!r} is not a name a runtime certificate can hold") from None
    return names[:MAX_SANS]


def _fresh(row: dict[str, Any]) -> bool:
    cert = x509.load_pem_x509_certificates(bytes(row["certificate_pem"]))[0]
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > RENEW_BEFORE
