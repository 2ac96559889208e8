"""HTTPS certificates for services' runtimes, in process: the agent's request (agent/service_tls.py) against the
hub's answer (hub/deployments/tls.py), on a real SQLite data dir and a real hub CA.

Refused: a request not signed by the device's current key (what a broker publishing as the device could send).
Answered: a hub certificate for the device's runtime key with the host it asked for; the user's own key sealed
so that only that runtime key opens it. Either arrives as a new desired revision for that device only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.service_tls import ServiceTlsError, open_sealed_key, runtime_key, tls_request, usable_files
from hub.deployconfig import parse_deployment_config
from hub.deployments.tls import seal
from hub.errors import BadInput
from hub.services import HubServices
from protos.edgeport.v1 import agent_pb2
from tests.unit.enrollment import enroll_request


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def _device(hub: HubServices, name: str, folder: Path) -> Path:
    """Enroll `name` with a key of its own; its identity folder (device.key, device.crt) as the agent keeps it."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ).sign(key, hashes.SHA256())
    token = hub.fleet.create_token(name, ["site=lab"])["token"]
    response = hub.fleet.enroll(enroll_request(token, csr.public_bytes(serialization.Encoding.PEM)))
    identity = folder / name / "identity"
    identity.mkdir(parents=True)
    (identity / "device.key").write_bytes(_pem_key(key))
    (identity / "device.crt").write_bytes(response.certificate_pem)
    return identity


def _register(hub: HubServices, tmp_path: Path) -> int:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"model")
    digest = hub.blobs.put_file(path)
    return hub.registry.register("digits", [{"path": "model.onnx", "digest": digest, "size": 5}]).version


def _manifest(hub: HubServices, device: str, service: str) -> tuple[int, agent_pb2.ServiceManifest]:
    state = hub.deployments.desired_state(device)
    return state.revision, next(m for m in state.services if m.name == service)


def _status(m: agent_pb2.ServiceManifest, request: agent_pb2.TlsRequest) -> agent_pb2.DeploymentStatus:
    status = agent_pb2.DeploymentStatus(service=m.name, generation=m.generation, phase=agent_pb2.PENDING)
    status.tls_request.CopyFrom(request)
    return status


def test_the_hub_issues_a_certificate_for_the_key_the_device_made(hub: HubServices, tmp_path: Path) -> None:
    a, b = _device(hub, "cam-a", tmp_path), _device(hub, "cam-b", tmp_path)
    version = _register(hub, tmp_path)
    hub.deployments.create({"name": "svc", "models": [f"digits:{version}"], "target": "site=lab",
                            "deployment": {"sslEnabled": True, "sslCname": "svc.example.com"}})  # fmt: skip
    revision, m = _manifest(hub, "cam-a", "svc")
    assert m.tls.enabled and not m.tls.certificate_pem and m.tls.ca_pem == hub.fleet.ca.ca_pem
    service_dir = tmp_path / "cam-a" / "services" / "svc"
    key = runtime_key(service_dir)
    assert usable_files(m, service_dir, key) is None  # nothing yet: the agent asks and waits
    assert (service_dir / "tls" / "runtime.key").stat().st_mode & 0o777 == 0o600

    b_revision = hub.deployments.desired_state("cam-b").revision
    hub.deployments.record_status("cam-a", _status(m, tls_request("svc", key, "10.0.0.7", a)))
    new_revision, m = _manifest(hub, "cam-a", "svc")
    assert new_revision > revision and hub.deployments.desired_state("cam-b").revision == b_revision
    files = usable_files(m, service_dir, key)
    assert files is not None and files.key == service_dir / "tls" / "runtime.key"
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(hub.fleet.ca.ca_pem))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]
    assert sans.get_values_for_type(x509.DNSName) == ["svc.example.com"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]  # serves TLS; cannot act as a device or a CA
    # The same request again (a lost answer): nothing new is issued, the revision stays.
    hub.deployments.record_status("cam-a", _status(m, tls_request("svc", key, "10.0.0.7", a)))
    assert hub.deployments.desired_state("cam-a").revision == new_revision
    # cam-b's desired state carries no certificate of cam-a's.
    assert not _manifest(hub, "cam-b", "svc")[1].tls.certificate_pem
    assert b is not None


def test_a_request_not_signed_by_the_device_is_refused(hub: HubServices, tmp_path: Path) -> None:
    a, b = _device(hub, "cam-a", tmp_path), _device(hub, "cam-b", tmp_path)
    hub.deployments.create({"name": "svc", "models": [f"digits:{_register(hub, tmp_path)}"], "target": "site=lab",
                            "deployment": {"sslEnabled": True}})  # fmt: skip
    revision, m = _manifest(hub, "cam-a", "svc")
    key = runtime_key(tmp_path / "svc")
    # Signed by cam-b but sent as cam-a (a broker publishing on cam-a's topic with what it saw of cam-b).
    with pytest.raises(BadInput, match="not signed with device cam-a's current certificate"):
        hub.deployments.desired.tls.answer("cam-a", _status(m, tls_request("svc", key, "10.0.0.7", b)))
    # cam-a's certificate with a signature by some other key.
    forged = tls_request("svc", key, "10.0.0.7", a)
    forged.proof = ec.generate_private_key(ec.SECP256R1()).sign(b"x", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(BadInput, match="the device's signature does not verify"):
        hub.deployments.desired.tls.answer("cam-a", _status(m, forged))
    # Another service's request replayed for this one: the signature covers the service name.
    other = tls_request("other", key, "10.0.0.7", a)
    with pytest.raises(BadInput, match="signature does not verify"):
        hub.deployments.desired.tls.answer("cam-a", _status(m, other))
    assert hub.deployments.desired_state("cam-a").revision == revision
    assert not _manifest(hub, "cam-a", "svc")[1].tls.certificate_pem


def test_the_users_key_is_sealed_to_the_runtime_key_of_one_device(hub: HubServices, tmp_path: Path) -> None:
    a = _device(hub, "cam-a", tmp_path)
    user_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scorer.example")])
    now = dt.datetime.now(dt.UTC)
    user_cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(user_key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .sign(user_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    )  # fmt: skip
    deployment = {"sslEnabled": True, "sslCertificate": user_cert.decode(), "sslKey": _pem_key(user_key).decode()}
    hub.deployments.create({"name": "svc", "models": [f"digits:{_register(hub, tmp_path)}"], "target": "cam-a",
                            "deployment": deployment})  # fmt: skip
    _, m = _manifest(hub, "cam-a", "svc")
    stored = hub.deployments.store.manifest("svc", 1)
    assert stored is not None and _pem_key(user_key) not in stored  # the shared manifest has no key
    assert m.tls.user_certificate and m.tls.certificate_pem == user_cert and not m.tls.encrypted_key
    service_dir = tmp_path / "svc"
    key = runtime_key(service_dir)
    hub.deployments.record_status("cam-a", _status(m, tls_request("svc", key, "127.0.0.1", a)))
    _, m = _manifest(hub, "cam-a", "svc")
    assert _pem_key(user_key) not in m.SerializeToString()  # what a broker or a mirror would see
    files = usable_files(m, service_dir, key)
    assert files is not None and files.key.read_bytes() == _pem_key(user_key)
    # Sealed to one key: another key cannot open it.
    with pytest.raises(ServiceTlsError, match="does not open"):
        open_sealed_key(m.tls.encrypted_key, ec.generate_private_key(ec.SECP256R1()))


def test_seal_and_open_agree_and_tampering_is_caught() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    sealed = seal(b"secret key pem", key.public_key())
    assert open_sealed_key(sealed, key) == b"secret key pem"
    assert hashlib.sha256(sealed).digest() != hashlib.sha256(seal(b"secret key pem", key.public_key())).digest()
    with pytest.raises(ServiceTlsError):
        open_sealed_key(sealed[:-1] + bytes([sealed[-1] ^ 1]), key)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"sslEnabled": True, "sslKey": "x"}, "sslKey is given without sslCertificate"),
        ({"sslEnabled": True, "sslCertificate": "x", "sslKey": "y"}, "sslCertificate is not a PEM certificate"),
        ({"sslCertificate": "x", "sslKey": "y"}, 'sslCertificate and sslKey need "sslEnabled": true'),
        ({"sslEnabled": 1}, "sslEnabled must be true or false"),
        ({"sslCname": "a..b"}, "sslCname 'a..b' is not a DNS name"),
    ],
)
def test_ssl_keys_are_checked_by_name(config: dict[str, object], message: str) -> None:
    with pytest.raises(BadInput, match=message):
        parse_deployment_config(config, where="dc.json")


def test_a_device_cannot_get_a_certificate_for_the_hubs_own_names(hub: HubServices, tmp_path: Path) -> None:
    """The hub's clients trust its CA for the hub's names: a runtime certificate must not pass for the hub."""
    hub.fleet.ca.server_credentials(["hub.example.com", "10.1.1.1"])
    a = _device(hub, "cam-a", tmp_path)
    hub.deployments.create({"name": "svc", "models": [f"digits:{_register(hub, tmp_path)}"], "target": "cam-a",
                            "deployment": {"sslEnabled": True}})  # fmt: skip
    _, m = _manifest(hub, "cam-a", "svc")
    key = runtime_key(tmp_path / "svc")
    for name in ("hub.example.com", "10.1.1.1"):
        with pytest.raises(BadInput, match=f"{name} names the hub itself"):
            hub.deployments.desired.tls.answer("cam-a", _status(m, tls_request("svc", key, name, a)))
    assert hub.deployments.desired.tls.answer("cam-a", _status(m, tls_request("svc", key, "127.0.0.1", a)))


def test_a_refused_request_is_shown_with_the_service(hub: HubServices, tmp_path: Path) -> None:
    hub.fleet.ca.server_credentials(["hub.example.com"])
    a = _device(hub, "cam-a", tmp_path)
    hub.deployments.create({"name": "svc", "models": [f"digits:{_register(hub, tmp_path)}"], "target": "cam-a",
                            "deployment": {"sslEnabled": True}})  # fmt: skip
    _, m = _manifest(hub, "cam-a", "svc")
    status = _status(m, tls_request("svc", runtime_key(tmp_path / "svc"), "hub.example.com", a))
    status.message = "waiting for the hub to issue its TLS certificate"
    with pytest.raises(BadInput):
        hub.deployments.record_status("cam-a", status)
    [device] = hub.deployments.show("svc")["devices"]
    assert device["phase"] == "Pending" and device["message"] == (
        "waiting for the hub to issue its TLS certificate: the hub refused its request: "
        "TLS request for svc: hub.example.com names the hub itself"
    )


def test_a_certificate_near_its_end_is_issued_again(hub: HubServices, tmp_path: Path) -> None:
    a = _device(hub, "cam-a", tmp_path)
    hub.deployments.create({"name": "svc", "models": [f"digits:{_register(hub, tmp_path)}"], "target": "cam-a",
                            "deployment": {"sslEnabled": True}})  # fmt: skip
    _, m = _manifest(hub, "cam-a", "svc")
    service_dir = tmp_path / "svc"
    key = runtime_key(service_dir)
    assert hub.deployments.desired.tls.answer("cam-a", _status(m, tls_request("svc", key, "127.0.0.1", a)))
    row = hub.deployments.store.certificate("svc", "cam-a")
    assert row is not None
    # The stored certificate is swapped for one with 10 days left: the device asks again, the hub renews.
    now = dt.datetime.now(dt.UTC)
    short = hub.fleet.ca.issue(
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc@cam-a")]))
        .public_key(key.public_key())
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False),
        not_before=now - dt.timedelta(days=1), days=11,
    ).public_bytes(serialization.Encoding.PEM)  # fmt: skip
    hub.deployments.store.put_certificate({**row, "certificate_pem": short})
    assert hub.deployments.store.certificate("svc", "cam-a")["certificate_pem"] == short  # type: ignore[index]
    _, m = _manifest(hub, "cam-a", "svc")
    assert usable_files(m, service_dir, key) is None  # the agent asks again rather than serve it to its end
    assert hub.deployments.desired.tls.answer("cam-a", _status(m, tls_request("svc", key, "127.0.0.1", a)))
    _, m = _manifest(hub, "cam-a", "svc")
    files = usable_files(m, service_dir, key)
    assert files is not None
    renewed = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert renewed.not_valid_after_utc - now > dt.timedelta(days=300)
