"""The hub's agent channel end to end with a real `hub serve`: enrollment over HTTP, mutual TLS, desired state
pushed on deploy, acks, statuses, revocation, foreign CAs, the --insecure credential, and CLI bad inputs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest

from hub.pki import CertificateAuthority
from protos.edgeport.v1 import agent_pb2
from tests.integration.control_support import (
    AgentSession,
    enroll,
    enroll_raw,
    make_csr,
    start_control_hub,
    tls_session,
)
from tests.integration.registry_support import hub_cli
from tests.support import Processes


def _hello(device: str) -> agent_pb2.AgentMessage:
    return agent_pb2.AgentMessage(hello=agent_pb2.Hello(device_id=device, agent_version="test", next_seq=1))


def _desired(message: agent_pb2.HubMessage) -> agent_pb2.DesiredState:
    """The DesiredState inside the signed envelope the hub sent (agent/trust.py checks the signature)."""
    return agent_pb2.DesiredState.FromString(message.desired.desired_state)


def test_mtls_channel_desired_state_status_and_revocation(
    processes: Processes, tmp_path: Path, digits_model: Path
) -> None:
    hub = start_control_hub(processes, tmp_path / "hub")
    url = hub.url
    token = hub_cli(url, "device", "enroll", "cam-1", "--label", "site=lab", "--output", "json").json()["token"]
    identity = enroll(url, token)
    assert identity.device_id == "cam-1" and identity.grpc_address.endswith(f":{hub.grpc_port}")

    # reused token: refused with a clear message, and nothing changes
    status, body = enroll_raw(url, token)
    assert status == 401 and "already used" in json.loads(body)["error"]["message"]

    session = tls_session(identity)
    try:
        session.send(_hello("cam-1"))
        welcome = session.next("welcome")
        assert welcome.welcome.device_id == "cam-1"
        first = _desired(session.next("desired"))
        assert list(first.services) == [] and first.device_id == "cam-1"

        assert hub_cli(url, "model", "register", "-n", "digits", "-p", str(digits_model)).code == 0
        # bad inputs on deploy: each refused with exit 2 and a message naming the problem
        dc = tmp_path / "dc.json"
        dc.write_text(json.dumps({"computeType": "edge", "replicas": 3}))
        bad = hub_cli(url, "deploy", "-n", "svc", "-m", "digits:1", "--dc", str(dc), "--target", "site=lab")
        assert bad.code == 2 and "unknown key 'replicas'" in bad.err and "Traceback" not in bad.err
        bad = hub_cli(url, "deploy", "-n", "svc", "-m", "digits:7", "--target", "site=lab")
        assert bad.code == 2 and "no version 7" in bad.err
        bad = hub_cli(url, "deploy", "-n", "svc", "-m", "digits:1", "--target", "site=mars")
        assert bad.code == 2 and "selects no device" in bad.err

        deployed = hub_cli(url, "deploy", "-n", "svc", "-m", "digits:1", "--target", "site=lab", "--no-wait")
        assert deployed.code == 0, deployed.err
        pushed = _desired(session.next("desired"))  # pushed at once, no polling by the agent
        assert pushed.revision > first.revision
        manifest = pushed.services[0]
        assert manifest.name == "svc" and manifest.generation == 1 and manifest.runtime.onnx_file == "model.onnx"
        assert manifest.registry == url

        report = agent_pb2.DeploymentStatus(service="svc", generation=1, phase=agent_pb2.HEALTHY,
                                            scoring_uri="http://127.0.0.1:5001/score", serving_generation=1)
        session.send(agent_pb2.AgentMessage(seq=1, status=report))
        assert session.next("ack").ack.seq == 1
        session.send(agent_pb2.AgentMessage(seq=1, status=report))  # a repeat: acked again, stored once
        assert session.next("ack").ack.seq == 1
        shown = hub_cli(url, "service", "show", "svc", "--output", "json").json()
        assert shown["state"] == "Healthy" and shown["devices"][0]["scoring_uri"] == report.scoring_uri
        assert hub_cli(url, "device", "show", "cam-1", "--output", "json").json()["online"] is True

        # deleting the model version in use is refused, naming the service
        refused = hub_cli(url, "model", "delete", "digits:1")
        assert refused.code == 2 and "svc" in refused.err

        # revocation closes the live stream and refuses the next connection
        assert hub_cli(url, "device", "revoke", "cam-1").code == 0
        with pytest.raises(grpc.RpcError) as err:
            session.next(timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in err.value.details()
    finally:
        session.close()
    again = tls_session(identity)
    try:
        again.send(_hello("cam-1"))
        with pytest.raises(grpc.RpcError) as err:
            again.next(timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in err.value.details()
    finally:
        again.close()


def test_foreign_ca_and_expired_token_are_refused(processes: Processes, tmp_path: Path) -> None:
    hub = start_control_hub(processes, tmp_path / "hub")
    token = hub_cli(hub.url, "device", "enroll", "cam-2", "--output", "json").json()["token"]
    identity = enroll(hub.url, token)
    # a certificate for the same name from another CA: the TLS handshake itself fails
    key_pem, csr = make_csr()
    other = CertificateAuthority(tmp_path / "other-ca").sign_csr(csr, "cam-2")
    forged = type(identity)(identity.device_id, key_pem, other.pem, identity.ca_pem, identity.grpc_address)
    session = tls_session(forged)
    try:
        session.send(_hello("cam-2"))
        with pytest.raises(grpc.RpcError) as err:
            session.next(timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        session.close()
    # an expired token
    short = hub_cli(hub.url, "device", "enroll", "cam-3", "--expires", "1s", "--output", "json").json()["token"]
    time.sleep(1.5)
    status, body = enroll_raw(hub.url, short)
    assert status == 401 and "expired" in json.loads(body)["error"]["message"]
    bad = hub_cli(hub.url, "device", "enroll", "cam-4", "--expires", "soon")
    assert bad.code == 2 and "invalid duration" in bad.err


def test_insecure_channel_needs_the_device_credential(processes: Processes, tmp_path: Path) -> None:
    hub = start_control_hub(processes, tmp_path / "hub", insecure=True)
    token = hub_cli(hub.url, "device", "enroll", "dev", "--output", "json").json()["token"]
    identity = enroll(hub.url, token)
    from hub.pki import certificate_sha256

    wrong = AgentSession(identity.grpc_address, None, [("x-edgeport-device", "dev"), ("x-edgeport-credential", "0")])
    try:
        wrong.send(_hello("dev"))
        with pytest.raises(grpc.RpcError) as err:
            wrong.next(timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "wrong credential" in err.value.details()
    finally:
        wrong.close()
    meta = [("x-edgeport-device", "dev"), ("x-edgeport-credential", certificate_sha256(identity.cert_pem))]
    right = AgentSession(identity.grpc_address, None, meta)
    try:
        right.send(_hello("dev"))
        assert right.next("welcome").welcome.device_id == "dev"
    finally:
        right.close()


def test_hub_restart_keeps_acks_and_desired_state(processes: Processes, tmp_path: Path, digits_model: Path) -> None:
    hub = start_control_hub(processes, tmp_path / "hub")
    token = hub_cli(hub.url, "device", "enroll", "dev", "--output", "json").json()["token"]
    identity = enroll(hub.url, token)
    assert hub_cli(hub.url, "model", "register", "-n", "digits", "-p", str(digits_model)).code == 0
    assert hub_cli(hub.url, "deploy", "-n", "svc", "-m", "digits:1", "--target", "dev", "--no-wait").code == 0
    session = tls_session(identity)
    try:
        session.send(_hello("dev"))
        session.next("welcome")
        desired = _desired(session.next("desired"))
        for seq in (1, 2, 3):
            beat = agent_pb2.AgentMessage(seq=seq, heartbeat=agent_pb2.Heartbeat(uptime_s=seq))
            session.send(beat)
            assert session.next("ack").ack.seq == seq
    finally:
        session.close()
    processes.stop(hub.hub.proc)
    hub = start_control_hub(processes, tmp_path / "hub", port=hub.hub.port, grpc_port=hub.grpc_port)
    assert hub_cli(hub.url, "device", "show", "dev", "--output", "json").json()["online"] is False
    session = tls_session(identity)
    try:
        session.send(_hello("dev"))
        assert session.next("welcome").welcome.acked_seq == 3  # the outbox need not resend what was stored
        again = _desired(session.next("desired"))
        assert again.revision == desired.revision and again.services[0].generation == 1
        assert hub_cli(hub.url, "device", "show", "dev", "--output", "json").json()["online"] is True
    finally:
        session.close()
