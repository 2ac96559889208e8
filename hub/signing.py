"""The hub's manifest-signing key: every DesiredState the hub sends is signed with it (Ed25519).

The key lives beside the CA in `DATA_DIR/pki/` (`manifest-signing.key`, 0600) with a certificate
the hub CA issues for it (`manifest-signing.crt`), whose extended key usage names manifest
signing and nothing else. Agents pin the CA at enrollment (the token carries its fingerprint), so
the CA's certificate is what makes the key trusted: an agent gets it in the EnrollResponse and in
every SignedDesiredState, and takes up a rotated key as soon as a state signed by it arrives.
An agent never goes back to an older key than one it has accepted (see agent/trust.py).

The signature covers SIGNING_DOMAIN + the exact serialized DesiredState, so the agent verifies
the bytes before it parses them, and a signature made for something else never passes as one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from hub.errors import StorageError
from hub.pki import CA_DAYS, CertificateAuthority, write_private
from protos.edgeport.v1 import agent_pb2

# What the signature covers before the DesiredState's bytes; the agent prepends the same.
SIGNING_DOMAIN = b"edgeport.v1.DesiredState\x00"
# The extended key usage of a manifest-signing certificate (an OID under 2.25, the UUID arc anyone may use).
# Device and server certificates from the same CA never carry it, so none of them can sign desired state.
MANIFEST_SIGNING_OID = x509.ObjectIdentifier("2.25.279134216640745397040412585768373432411")
KEY_FILE = "manifest-signing.key"
CERT_FILE = "manifest-signing.crt"


def key_id(public_key: ed25519.Ed25519PublicKey) -> str:
    """Hex sha256 of the raw 32-byte public key: how a SignedDesiredState names its key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


class ManifestSigner:
    """The signing key and its CA-issued certificate in `ca.dir`: created with the CA, kept, rotatable."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca
        self.not_before: dt.datetime | None = None  # of the key in use; agents order keys by it
        key_path, cert_path = ca.dir / KEY_FILE, ca.dir / CERT_FILE
        if key_path.exists() and cert_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ed25519.Ed25519PrivateKey):
                raise StorageError(f"{key_path} is not an Ed25519 key ({type(key).__name__}); it signs desired state")
            self._load(key, cert_path.read_bytes())
        else:
            self.rotate()

    def _load(self, key: ed25519.Ed25519PrivateKey, cert_pem: bytes) -> None:
        cert = x509.load_pem_x509_certificate(cert_pem)
        if cert.public_key() != key.public_key():
            raise StorageError(f"{self.ca.dir / CERT_FILE} is not the certificate of {self.ca.dir / KEY_FILE}")
        self._key = key
        self.not_before = cert.not_valid_before_utc
        self.certificate_der = cert.public_bytes(serialization.Encoding.DER)
        self.key_id = key_id(key.public_key())

    def rotate(self) -> str:
        """Make a new key and have the CA certify it; returns its key id.

        Agents take the new key up with the first desired state signed by it (its certificate travels
        along); until then they keep accepting the old one, whose files are not needed any more.
        """
        key = ed25519.Ed25519PrivateKey.generate()
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)  # X.509 times have whole seconds
        if self.not_before is not None and now <= self.not_before:  # two rotations in one second stay ordered
            now = self.not_before + dt.timedelta(seconds=1)
        cert = self.ca.issue(
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Edgeport manifest signing")]))
            .public_key(key.public_key())
            .add_extension(x509.ExtendedKeyUsage([MANIFEST_SIGNING_OID]), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
            ),
            # Agents order keys by this time: a rotated key's certificate must not look older than the last.
            not_before=now,
            days=CA_DAYS,
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_private(self.ca.dir / KEY_FILE, key_pem)
        tmp = self.ca.dir / (CERT_FILE + ".tmp")
        tmp.write_bytes(cert_pem)
        os.replace(tmp, self.ca.dir / CERT_FILE)
        self._load(key, cert_pem)
        return self.key_id

    def sign(self, desired: agent_pb2.DesiredState) -> agent_pb2.SignedDesiredState:
        """Serialize and sign one device's DesiredState (its device_id must be set)."""
        payload = desired.SerializeToString()
        return agent_pb2.SignedDesiredState(
            desired_state=payload,
            signature=self._key.sign(SIGNING_DOMAIN + payload),
            key_id=self.key_id,
            signing_certificate=self.certificate_der,
            revision=desired.revision,
        )

