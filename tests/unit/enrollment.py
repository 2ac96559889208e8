"""Enrolling devices in process, the way an agent does: a CSR with an HMAC proof of the token's secret."""

from __future__ import annotations

import hashlib
import hmac

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hub.services import HubServices
from protos.edgeport.v1 import agent_pb2


def new_csr() -> bytes:
    """A PEM CSR for a fresh P-256 key (the hub names the device itself, whatever the CSR claims)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "whatever-the-device-claims")])
    return x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM
    )


def enroll_request(token: str, csr: bytes | None = None) -> agent_pb2.EnrollRequest:
    """The EnrollRequest an agent sends for `token` (`ep1.<id>.<secret>.<ca>`)."""
    _, token_id, secret, _ = token.split(".")
    csr = csr or new_csr()
    proof = hmac.new(secret.encode(), csr, hashlib.sha256).digest()
    return agent_pb2.EnrollRequest(token_id=token_id, csr_pem=csr, proof=proof, agent_version="test")


def enroll(hub: HubServices, name: str, labels: list[str] | None = None) -> agent_pb2.EnrollResponse:
    """Issue a token for `name` and enroll with it."""
    token = hub.fleet.create_token(name, labels or [])["token"]
    return hub.fleet.enroll(enroll_request(token))
