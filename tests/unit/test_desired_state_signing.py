"""Signed desired state: the hub's signing key (hub/signing.py) against the agent's checks (agent/trust.py).

Real keys and certificates from a real hub CA on disk; the agent side keeps its state in a real AgentState.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from agent import ed25519 as agent_ed25519
from agent.state import AgentState
from agent.trust import DesiredStateRefused, DesiredStateTrust, SigningKey, check_signing_certificate
from hub.pki import CertificateAuthority
from hub.services import HubServices
from hub.signing import CERT_FILE, KEY_FILE, SIGNING_DOMAIN, ManifestSigner
from protos.edgeport.v1 import agent_pb2
from tests.unit.enrollment import enroll


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    """A hub CA on disk."""
    return CertificateAuthority(tmp_path / "pki")


@pytest.fixture
def agent_state(tmp_path: Path) -> Iterator[AgentState]:
    """The agent's state database."""
    state = AgentState(tmp_path / "agent")
    try:
        yield state
    finally:
        state.close()


def _trust(state: AgentState, ca: CertificateAuthority, device: str = "cam-1") -> DesiredStateTrust:
    ca_path = state.data_dir / "ca.crt"
    ca_path.write_bytes(ca.ca_pem)
    return DesiredStateTrust(state, device, ca_path)


def _state(revision: int, device: str = "cam-1", service: str = "scorer") -> agent_pb2.DesiredState:
    manifest = agent_pb2.ServiceManifest(name=service, generation=revision)
    manifest.models.add(name="digits", version=1).files.add(path="model.onnx", digest="sha256:" + "ab" * 32)
    return agent_pb2.DesiredState(revision=revision, device_id=device, services=[manifest])


def _refusal(trust: DesiredStateTrust, signed: agent_pb2.SignedDesiredState, applied: int = 0) -> str:
    with pytest.raises(DesiredStateRefused) as info:
        trust.verify(signed, applied)
    return info.value.reason


def test_a_signed_state_verifies_and_every_byte_of_it_counts(
    ca: CertificateAuthority, agent_state: AgentState
) -> None:
    signer = ManifestSigner(ca)
    trust = _trust(agent_state, ca)
    signed = signer.sign(_state(3))
    assert signed.revision == 3 and signed.key_id == signer.key_id and len(signed.signature) == 64
    assert trust.verify(signed, 0) == _state(3)
    assert trust.signer is not None and trust.signer.key_id == signer.key_id  # first key: taken from the CA's word
    for i in range(len(signed.desired_state)):  # a flipped bit anywhere: refused
        tampered = agent_pb2.SignedDesiredState()
        tampered.CopyFrom(signed)
        body = bytearray(signed.desired_state)
        body[i] ^= 0x01
        tampered.desired_state = bytes(body)
        assert _refusal(trust, tampered) == "signature does not verify"
    bad_signature = agent_pb2.SignedDesiredState()
    bad_signature.CopyFrom(signed)
    bad_signature.signature = signed.signature[:-1] + bytes([signed.signature[-1] ^ 0x80])
    assert _refusal(trust, bad_signature) == "signature does not verify"
    bad_signature.signature = b""
    assert _refusal(trust, bad_signature) == "signature does not verify"


def test_a_key_the_hub_ca_did_not_certify_for_signing_is_refused(
    ca: CertificateAuthority, agent_state: AgentState, tmp_path: Path
) -> None:
    signer = ManifestSigner(ca)
    trust = _trust(agent_state, ca)
    trust.verify(signer.sign(_state(1)), 0)
    # Another hub's signer (its own CA): its certificate does not chain to ours.
    other = ManifestSigner(CertificateAuthority(tmp_path / "other-pki"))
    assert _refusal(trust, other.sign(_state(2))) == "signing certificate was not issued by this device's hub CA"
    # A key of its own, with our genuine certificate attached: the signature does not verify.
    forged = signer.sign(_state(2))
    forged.signature = ed25519.Ed25519PrivateKey.generate().sign(SIGNING_DOMAIN + forged.desired_state)
    assert _refusal(trust, forged) == "signature does not verify"
    # A certificate our CA issued, to an Ed25519 key, but for a device (what any enrolled device could get):
    # it is not for signing desired state.
    device_key = ed25519.Ed25519PrivateKey.generate()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mallory")]))
        .sign(device_key, None)
    )
    issued = ca.sign_csr(csr.public_bytes(serialization.Encoding.PEM), "mallory")
    device_cert = x509.load_pem_x509_certificate(issued.pem).public_bytes(serialization.Encoding.DER)
    payload = _state(2).SerializeToString()
    mallory = agent_pb2.SignedDesiredState(
        desired_state=payload,
        signature=device_key.sign(SIGNING_DOMAIN + payload),
        signing_certificate=device_cert,
    )
    assert "not for signing desired state" in _refusal(trust, mallory)
    # No certificate, an unknown key id: nothing to check it with.
    mallory.signing_certificate, mallory.key_id = b"", "00" * 32
    assert "which this device does not know" in _refusal(trust, mallory)
    assert trust.signer is not None and trust.signer.key_id == signer.key_id  # none of them was taken up


def test_another_devices_state_and_a_replay_are_refused(ca: CertificateAuthority, agent_state: AgentState) -> None:
    signer = ManifestSigner(ca)
    trust = _trust(agent_state, ca)
    other = signer.sign(_state(9, device="cam-2"))
    assert _refusal(trust, other) == "it is for device 'cam-2', not this one"
    no_device = signer.sign(_state(9, device=""))
    assert _refusal(trust, no_device) == "it is for device '(none)', not this one"
    old = signer.sign(_state(4))
    with pytest.raises(DesiredStateRefused) as info:
        trust.verify(old, 5)
    assert info.value.reason == "replay: revision 4 is older than the applied revision 5"
    assert info.value.revision == 4  # what it claimed, for the hub's report
    assert trust.verify(signer.sign(_state(5)), 5).revision == 5  # the applied revision again: a harmless repeat


def test_rotation_takes_up_the_new_key_and_retires_the_old_across_restarts(
    ca: CertificateAuthority, agent_state: AgentState
) -> None:
    signer = ManifestSigner(ca)
    trust = _trust(agent_state, ca)
    first_key = signer.key_id
    signed_by_old = signer.sign(_state(2))
    assert trust.verify(signer.sign(_state(1)), 0).revision == 1
    time.sleep(1.1)  # certificate times have one-second resolution
    assert signer.rotate() != first_key
    assert trust.verify(signed_by_old, 1).revision == 2  # not yet seen the new key: the old one still counts
    assert trust.verify(signer.sign(_state(3)), 2).revision == 3  # the new key, certified by the CA: taken up
    assert trust.signer is not None and trust.signer.key_id == signer.key_id
    assert "older than the key in use (rotated out)" in _refusal(trust, signed_by_old, 1)
    restarted = _trust(agent_state, ca)  # the agent restarts: the key it took up is remembered
    assert restarted.signer == trust.signer
    assert "rotated out" in _refusal(restarted, signed_by_old, 1)
    assert restarted.verify(signer.sign(_state(4)), 3).revision == 4
    reopened = ManifestSigner(ca)  # the hub restarts: it signs with the rotated key
    assert reopened.key_id == signer.key_id and reopened.certificate_der == signer.certificate_der


def test_the_hub_keeps_its_key_and_refuses_a_key_file_of_another_kind(ca: CertificateAuthority) -> None:
    signer = ManifestSigner(ca)
    assert oct((ca.dir / KEY_FILE).stat().st_mode & 0o777) == "0o600"
    assert ManifestSigner(ca).key_id == signer.key_id
    cert = x509.load_der_x509_certificate(signer.certificate_der)
    assert cert.issuer == x509.load_pem_x509_certificate(ca.ca_pem).subject
    key = check_signing_certificate(signer.certificate_der, ca.ca_pem)  # what enrollment checks
    assert key.key_id == signer.key_id and SigningKey.from_json(key.to_json()) == key
    from cryptography.hazmat.primitives.asymmetric import ec

    (ca.dir / KEY_FILE).write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(Exception, match="is not an Ed25519 key"):
        ManifestSigner(ca)
    (ca.dir / KEY_FILE).unlink()
    (ca.dir / CERT_FILE).unlink()
    assert ManifestSigner(ca).key_id != signer.key_id  # both files gone: a new key (a rotation)


def test_enrollment_hands_out_the_signing_certificate_and_the_core_sends_only_signed_state(
    hub: HubServices, agent_state: AgentState
) -> None:
    response = enroll(hub, "cam-1")
    key = check_signing_certificate(response.signing_certificate, response.ca_pem)
    assert key.key_id == hub.fleet.signer.key_id
    trust = _trust(agent_state, hub.fleet.ca)
    trust.adopt(key)
    session, _ = hub.control.open_session("cam-1", agent_pb2.Hello(device_id="cam-1"), transport="test")
    [message] = hub.control.outgoing(session)
    state = trust.verify(message.desired, 0)
    assert state.device_id == "cam-1" and state.revision == message.desired.revision >= 1


def test_a_refusal_shows_in_the_service_view_until_a_newer_revision_is_applied(
    hub: HubServices, tmp_path: Path
) -> None:
    enroll(hub, "cam-1")
    model = tmp_path / "model.onnx"
    model.write_bytes(b"model")
    digest = hub.blobs.put_file(model)
    version = hub.registry.register("digits", [{"path": "model.onnx", "digest": digest, "size": 5}]).version
    hub.deployments.create({"name": "svc", "models": [f"digits:{version}"], "target": "cam-1"})
    applied = hub.fleet.standing("cam-1")["desired_revision"]
    session, _ = hub.control.open_session(
        "cam-1", agent_pb2.Hello(device_id="cam-1", desired_revision=applied, next_seq=1), transport="test"
    )
    status = agent_pb2.DeploymentStatus(service="svc", generation=1, phase=agent_pb2.HEALTHY, serving_generation=1,
                                        desired_revision=applied)  # fmt: skip
    hub.control.handle(session, agent_pb2.AgentMessage(seq=1, status=status))
    refused = agent_pb2.DesiredStateRefused(revision=99, reason="signature does not verify", applied_revision=applied)
    hub.control.handle(session, agent_pb2.AgentMessage(seq=2, desired_refused=refused))
    [device] = hub.deployments.show("svc")["devices"]
    assert device["phase"] == "Healthy" and device["serving_generation"] == 1
    assert device["message"].startswith("refused desired state revision 99: signature does not verify")
    assert device["refused"]["revision"] == 99 and device["refused"]["reason"] == "signature does not verify"
    assert device["refused"]["at"] <= dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # The device applies a newer revision from the hub: the refusal is history.
    newer = agent_pb2.DesiredStateAck(revision=applied + 1)
    hub.control.handle(session, agent_pb2.AgentMessage(seq=3, desired_ack=newer))
    [device] = hub.deployments.show("svc")["devices"]
    assert device["refused"] is None and not device["message"].startswith("refused")


def test_verification_without_openssl_answers_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    message = b"edgeport" * 100
    signature = key.sign(message)
    answers = []
    for backend in ("openssl", "cryptography"):
        if backend == "cryptography":
            monkeypatch.setattr(agent_ed25519, "_backend", lambda: None)
        public = agent_ed25519.PublicKey(raw)
        answers.append(
            (public.verify(signature, message), public.verify(signature, message + b"!"),
             public.verify(signature[:32], message), public.verify(bytes(64), message))
        )  # fmt: skip
    assert answers[0] == answers[1] == (True, False, False, False)
    with pytest.raises(ValueError, match="32 bytes"):
        agent_ed25519.PublicKey(raw[:31])


def test_rotating_the_key_over_the_api_sends_every_device_a_newer_state_it_takes_up(
    hub: HubServices, agent_state: AgentState
) -> None:
    from fastapi.testclient import TestClient

    from hub.api.app import create_app

    response = enroll(hub, "cam-1")
    trust = _trust(agent_state, hub.fleet.ca)
    trust.adopt(check_signing_certificate(response.signing_certificate, response.ca_pem))
    before = hub.deployments.signed_desired_state("cam-1")
    applied = trust.verify(before, 0).revision
    old_key = hub.fleet.signer.key_id
    admin = {"Authorization": f"Bearer {hub.access.create_token('ops', 'admin')['token']}"}
    viewer = {"Authorization": f"Bearer {hub.access.create_token('look', 'viewer')['token']}"}
    with TestClient(create_app(hub)) as client:
        assert client.post("/api/v1/signing-key/rotate", headers=viewer).status_code == 403
        assert hub.fleet.signer.key_id == old_key  # a refused call changes nothing
        rotated = client.post("/api/v1/signing-key/rotate", headers=admin)
    assert rotated.status_code == 200 and rotated.json() == {"key_id": hub.fleet.signer.key_id, "devices": 1}
    assert rotated.json()["key_id"] != old_key
    after = hub.deployments.signed_desired_state("cam-1")
    assert after.key_id != old_key and after.revision > before.revision  # not a repeat the agent would ignore
    assert trust.verify(after, applied).revision == after.revision
    # The agent has taken the new key up: a state signed with the old one is refused from now on.
    with pytest.raises(DesiredStateRefused, match="rotated out"):
        trust.verify(before, applied)
