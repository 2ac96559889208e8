"""What the agent applies: only desired state its hub signed, for this device, at a newer revision.

The hub signs every DesiredState with an Ed25519 key its CA certified for manifest signing (the
certificate's extended key usage says so; device and server certificates never carry it). The CA is
pinned by the enrollment token, so the chain is: token -> CA -> signing certificate -> DesiredState.
A state is refused, before anything is pulled or started, when

  * its signing certificate was not issued by the pinned CA for manifest signing, or is older than
    the newest signing certificate this agent has accepted (a rotated-out key stays out);
  * the signature over SIGNING_DOMAIN + the DesiredState's bytes does not verify;
  * it names another device;
  * its revision is below the one applied (a replay; the same revision again is a harmless repeat).

The accepted signing certificate is kept in the agent's state (seeded at enrollment), with its raw
public key, so verifying needs no X.509 parsing: signatures are checked with agent/ed25519.py, and
`cryptography` is imported only when a new certificate comes (enrollment, a rotated key). Device
clocks are not trusted: certificate validity times are not checked, the order of `not_valid_before`
only tells a newer key from an older one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError

from agent.ed25519 import PublicKey
from agent.state import AgentState
from protos.edgeport.v1 import agent_pb2

SIGNING_DOMAIN = b"edgeport.v1.DesiredState\x00"  # the hub signs these bytes + the DesiredState's
MANIFEST_SIGNING_OID = "2.25.279134216640745397040412585768373432411"  # EKU of a manifest-signing certificate
SIGNER_KEY = "signing_certificate"  # AgentState key of the accepted signing certificate


class DesiredStateRefused(Exception):
    """A desired state that must not be applied; `reason` says why, `revision` is what it claimed."""

    def __init__(self, reason: str, revision: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.revision = revision


@dataclass(frozen=True)
class SigningKey:
    """A manifest-signing certificate this agent checked against its CA."""

    certificate_der: bytes
    public_key: bytes  # raw 32 bytes
    not_before: float  # unix time: orders keys, nothing else

    @property
    def key_id(self) -> str:
        """Hex sha256 of the raw public key (what SignedDesiredState.key_id names)."""
        return hashlib.sha256(self.public_key).hexdigest()

    def to_json(self) -> str:
        """How the agent's state stores it."""
        return json.dumps(
            {"der": self.certificate_der.hex(), "public_key": self.public_key.hex(), "not_before": self.not_before}
        )

    @classmethod
    def from_json(cls, raw: str) -> SigningKey:
        """Read back what `to_json` wrote."""
        d = json.loads(raw)
        return cls(bytes.fromhex(d["der"]), bytes.fromhex(d["public_key"]), float(d["not_before"]))


def check_signing_certificate(certificate_der: bytes, ca_pem: bytes) -> SigningKey:
    """The signing key in a certificate, if `ca_pem` issued it for manifest signing; DesiredStateRefused otherwise."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    try:
        cert = x509.load_der_x509_certificate(certificate_der)
        ca = x509.load_pem_x509_certificate(ca_pem)
    except ValueError as exc:
        raise DesiredStateRefused(f"signing certificate is not readable: {exc}") from None
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise DesiredStateRefused("signing certificate was not issued by this device's hub CA") from None
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = x509.ExtendedKeyUsage([])
    if x509.ObjectIdentifier(MANIFEST_SIGNING_OID) not in list(usage):
        raise DesiredStateRefused("certificate is not for signing desired state (extended key usage)")
    key = cert.public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise DesiredStateRefused(f"signing certificate holds a {type(key).__name__}, not an Ed25519 key")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return SigningKey(certificate_der, raw, cert.not_valid_before_utc.timestamp())


class DesiredStateTrust:
    """Verifies the SignedDesiredStates of one device (`verify`), keeping the signing key it accepted."""

    def __init__(self, state: AgentState, device_id: str, ca_pem_path: Path) -> None:
        self.state = state
        self.device_id = device_id
        self.ca_pem_path = Path(ca_pem_path)
        raw = state.get(SIGNER_KEY)
        self.signer: SigningKey | None = SigningKey.from_json(raw) if raw else None
        self._public = PublicKey(self.signer.public_key) if self.signer else None

    def adopt(self, key: SigningKey) -> None:
        """Trust `key` from now on (at enrollment, or once a state signed by a newer key verified)."""
        self.state.put(SIGNER_KEY, key.to_json())
        self.signer = key
        self._public = PublicKey(key.public_key)

    def _key_for(self, signed: agent_pb2.SignedDesiredState) -> tuple[PublicKey, SigningKey | None]:
        """The public key to check `signed` with, and the newer SigningKey to adopt if it verifies."""
        current = self.signer
        if current is not None and self._public is not None and (
            signed.signing_certificate == current.certificate_der
            or (not signed.signing_certificate and signed.key_id == current.key_id)
        ):
            return self._public, None  # the usual case: the key in use, no X.509 work
        if not signed.signing_certificate:
            unknown = signed.key_id[:16] or "(none)"
            raise DesiredStateRefused(f"signed by key {unknown}, which this device does not know")
        try:
            ca_pem = self.ca_pem_path.read_bytes()
        except OSError as exc:
            raise DesiredStateRefused(f"cannot read the hub CA to check a new signing key: {exc}") from None
        key = check_signing_certificate(signed.signing_certificate, ca_pem)
        if current is not None and key.not_before < current.not_before:
            raise DesiredStateRefused(f"signed by key {key.key_id[:16]}, older than the key in use (rotated out)")
        if signed.key_id and signed.key_id != key.key_id:
            raise DesiredStateRefused("the key id does not match the signing certificate's key")
        return PublicKey(key.public_key), key

    def verify(self, signed: agent_pb2.SignedDesiredState, applied_revision: int) -> agent_pb2.DesiredState:
        """The DesiredState inside `signed` if it may be applied; DesiredStateRefused (with the reason) if not."""
        try:
            public, newer = self._key_for(signed)
            if not public.verify(signed.signature, SIGNING_DOMAIN + signed.desired_state):
                raise DesiredStateRefused("signature does not verify")
            try:
                desired = agent_pb2.DesiredState.FromString(signed.desired_state)
            except DecodeError:
                raise DesiredStateRefused("signed bytes are not a DesiredState") from None
            if desired.device_id != self.device_id:
                raise DesiredStateRefused(f"it is for device {desired.device_id or '(none)'!r}, not this one")
            if desired.revision < applied_revision:
                raise DesiredStateRefused(
                    f"replay: revision {desired.revision} is older than the applied revision {applied_revision}"
                )
        except DesiredStateRefused as refusal:
            refusal.revision = _claimed_revision(signed.desired_state)
            raise
        if newer is not None:
            self.adopt(newer)
        return desired


def _claimed_revision(payload: bytes) -> int:
    """The revision a (not yet verified) DesiredState claims, for the refusal report; 0 if unreadable."""
    try:
        return agent_pb2.DesiredState.FromString(payload).revision
    except DecodeError:
        return 0
