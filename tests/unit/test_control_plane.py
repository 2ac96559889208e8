"""Hub control plane, in process on a real SQLite data dir: enrollment, deployments, desired state, core, telemetry."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.x509.oid import NameOID

from hub.control.core import FLEET_SIZE_TTL_S, RECONNECT_SPREAD_MAX_S
from hub.deployconfig import parse_deployment_config, parse_inference_config, requirements_from_conda
from hub.errors import BadInput, Conflict, NotFound, StorageError, Unauthorized
from hub.pki import CertificateAuthority
from hub.services import HubServices
from hub.signing import SIGNING_DOMAIN
from protos.edgeport.v1 import agent_pb2
from tests.unit.enrollment import enroll, enroll_request, new_csr


def _register(hub: HubServices, tmp_path: Path, name: str, content: bytes) -> int:
    path = tmp_path / f"{name}-{hashlib.sha256(content).hexdigest()[:8]}.onnx"
    path.write_bytes(content)
    digest = hub.blobs.put_file(path)
    files = [{"path": "model.onnx", "digest": digest, "size": len(content)}]
    return hub.registry.register(name, files).version


# ---- enrollment and identity ----


def test_enrollment_issues_certificate_pinned_to_ca(hub: HubServices) -> None:
    out = hub.fleet.create_token("dev-1", ["zone=a"])
    assert out["device"] == "dev-1" and out["token"].startswith("ep1.")
    pin = out["token"].split(".")[3]
    response = hub.fleet.enroll(enroll_request(out["token"]))
    ca = x509.load_pem_x509_certificate(response.ca_pem)
    assert hashlib.sha256(ca.public_bytes(serialization.Encoding.DER)).hexdigest() == pin
    cert = x509.load_pem_x509_certificate(response.certificate_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-1"  # not what the CSR claimed
    assert hub.fleet.authenticate_certificate(response.certificate_pem) == "dev-1"
    # the token's secret is not in the database, only its hash
    db_text = json.dumps(list(hub.db.db.query("SELECT * FROM enrollment_tokens")))
    assert out["token"].split(".")[2] not in db_text


def test_reused_token_is_refused(hub: HubServices) -> None:
    token = hub.fleet.create_token("dev-1", [])["token"]
    hub.fleet.enroll(enroll_request(token))
    with pytest.raises(Unauthorized, match="already used"):
        hub.fleet.enroll(enroll_request(token))


def test_expired_token_is_refused(hub: HubServices) -> None:
    token = hub.fleet.create_token("dev-1", [], ttl_s=1)["token"]
    hub.db.db.execute("UPDATE enrollment_tokens SET expires_at = ?", [time.time() - 5])
    with pytest.raises(Unauthorized, match="expired"):
        hub.fleet.enroll(enroll_request(token))


def test_wrong_proof_is_refused(hub: HubServices) -> None:
    token = hub.fleet.create_token("dev-1", [])["token"]
    request = enroll_request(token)
    request.proof = b"x" * 32
    with pytest.raises(Unauthorized, match="proof"):
        hub.fleet.enroll(request)
    assert hub.fleet.show("dev-1")["state"] == "pending"  # the token is not burnt by a bad attempt


def test_revoked_device_and_foreign_certificate_are_refused(hub: HubServices, tmp_path: Path) -> None:
    response = enroll(hub, "dev-1", [])
    hub.fleet.revoke("dev-1")
    with pytest.raises(Unauthorized, match="revoked"):
        hub.fleet.authenticate_certificate(response.certificate_pem)
    other = CertificateAuthority(tmp_path / "other-pki").sign_csr(new_csr(), "dev-1")
    with pytest.raises(Unauthorized, match="not issued by this hub"):
        hub.fleet.authenticate_certificate(other.pem)


def test_a_ca_key_that_cannot_sign_is_refused_at_load_and_kept(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    CertificateAuthority(pki)
    wrong = x25519.X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (pki / "ca.key").write_bytes(wrong)  # a key-agreement key: it cannot sign certificates
    with pytest.raises(StorageError, match=r"ca\.key is not a signing key \(X25519PrivateKey\)"):
        CertificateAuthority(pki)
    assert (pki / "ca.key").read_bytes() == wrong  # left for the operator to look at, not replaced


def test_bad_enrollment_inputs(hub: HubServices) -> None:
    with pytest.raises(BadInput, match="invalid device name"):
        hub.fleet.create_token("bad name!", [])
    with pytest.raises(BadInput, match="invalid label"):
        hub.fleet.create_token("dev-1", ["novalue"])
    enroll(hub, "dev-1", [])
    with pytest.raises(Conflict, match="already enrolled"):
        hub.fleet.create_token("dev-1", [])
    with pytest.raises(NotFound):
        hub.fleet.revoke("nope")


# ---- configs ----


def test_unknown_config_keys_are_named(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="unknown key 'autoScale'"):
        parse_deployment_config({"computeType": "edge", "autoScale": True})
    with pytest.raises(BadInput, match="unknown key 'gpu'"):
        parse_deployment_config({"containerResourceRequirements": {"cpu": 1, "gpu": 1}})
    with pytest.raises(BadInput, match="port must be"):
        parse_deployment_config({"port": 70000})
    with pytest.raises(BadInput, match="authEnabled must be true or false"):
        parse_deployment_config({"authEnabled": "yes"})
    (tmp_path / "score.py").write_text("def init(): pass\ndef run(x): return x\n")
    with pytest.raises(BadInput, match="unknown key 'entry_script'"):
        parse_inference_config({"entry_script": "score.py"}, tmp_path)
    with pytest.raises(BadInput, match=r"entryScript 'missing\.py' not found"):
        parse_inference_config({"entryScript": "missing.py"}, tmp_path)
    ic = parse_inference_config({"entryScript": "score.py", "runtime": "python", "requirements": ["numpy"]}, tmp_path)
    assert ic.entry_script == "score.py" and ic.requirements == ["numpy"]


def test_config_files_and_sdk_configs_report_bad_input(tmp_path: Path) -> None:
    from hub.deployconfig import load_json_file
    from hub.sdk.webservice import DeploymentConfig, InferenceConfig

    bad = tmp_path / "dc.json"
    bad.write_text('{"port": 80,}')
    with pytest.raises(BadInput, match=r"not valid JSON.*line 1"):
        load_json_file(bad, "deployment config")
    with pytest.raises(BadInput, match="not found"):
        load_json_file(tmp_path / "missing.json", "inference config")
    with pytest.raises(BadInput, match="unknown key 'replicas'"):
        DeploymentConfig(cpu_cores=1, replicas=2)
    assert DeploymentConfig(cpu_cores=1, auth_enabled=True).to_json()["containerResourceRequirements"] == {"cpu": 1}
    with pytest.raises(BadInput, match="sourceDirectory"):
        InferenceConfig(entry_script="score.py", source_directory=tmp_path / "nope").parsed()


def test_conda_file_gives_pip_requirements(tmp_path: Path) -> None:
    env = tmp_path / "env.yml"
    env.write_text("name: x\ndependencies:\n  - python=3.11\n  - numpy=1.26\n  - pip:\n    - scikit-learn>=1.4\n")
    assert requirements_from_conda(env) == ["numpy==1.26", "scikit-learn>=1.4"]


def _sent(hub: HubServices, device: str) -> agent_pb2.DesiredState:
    """The DesiredState the fronts send `device`, after checking the hub's signature and its device id."""
    signed = hub.control.desired_state(device)
    public = hub.fleet.signer._key.public_key()
    public.verify(signed.signature, SIGNING_DOMAIN + signed.desired_state)  # raises if it does not verify
    state = agent_pb2.DesiredState.FromString(signed.desired_state)
    assert state.device_id == device and state.revision == signed.revision
    return state


# ---- deployments and desired state ----


def test_deploy_by_label_builds_manifests_and_revisions(hub: HubServices, tmp_path: Path) -> None:
    for name, zone in (("a", "x"), ("b", "x"), ("c", "y")):
        enroll(hub, name, [f"zone={zone}"])
    v1 = _register(hub, tmp_path, "digits", b"one")
    view = hub.deployments.create(
        {"name": "svc", "models": [f"digits:{v1}"], "target": "zone=x", "deployment": {"authEnabled": True}}
    )
    assert view["generation"] == 1 and [d["device"] for d in view["devices"]] == ["a", "b"]
    state = _sent(hub, "a")
    assert [m.name for m in state.services] == ["svc"]
    manifest = state.services[0]
    assert manifest.runtime.onnx_file == "model.onnx" and manifest.models[0].files[0].path == "model.onnx"
    assert manifest.auth.mode == "key" and manifest.auth.primary_key == hub.deployments.keys("svc")["primaryKey"]
    assert _sent(hub, "c").services == []
    rev1 = state.revision
    v2 = _register(hub, tmp_path, "digits", b"two")
    hub.deployments.update("svc", {"models": [f"digits:{v2}"]})
    state2 = _sent(hub, "a")
    assert state2.revision > rev1 and state2.services[0].generation == 2
    assert state2.services[0].auth.primary_key == manifest.auth.primary_key  # keys survive updates
    assert _sent(hub, "a").revision == state2.revision  # no change, no bump
    keys = hub.deployments.keys("svc")
    new = hub.deployments.regenerate_key("svc", "secondary")
    assert new["primaryKey"] == keys["primaryKey"] and new["secondaryKey"] != keys["secondaryKey"]
    state3 = _sent(hub, "a")
    assert state3.services[0].generation == 3 and state3.services[0].auth.secondary_key == new["secondaryKey"]
    hub.deployments.delete("svc")
    assert _sent(hub, "a").services == []
    # the generation keeps growing across delete and re-create
    again = hub.deployments.create({"name": "svc", "models": [f"digits:{v2}"], "target": "a"})
    assert again["generation"] == 4


def test_desired_states_of_many_devices_match_one_at_a_time_and_leave_out_inactive_ones(
    hub: HubServices, tmp_path: Path
) -> None:
    for name, zone in (("a", "x"), ("b", "x"), ("c", "y"), ("d", "x")):
        enroll(hub, name, [f"zone={zone}"])
    v1 = _register(hub, tmp_path, "digits", b"one")
    hub.deployments.create({"name": "svc", "models": [f"digits:{v1}"], "target": "zone=x"})
    hub.deployments.create({"name": "other", "models": [f"digits:{v1}"], "target": "a"})
    hub.fleet.revoke("d")
    many = hub.control.desired_states(["a", "b", "c", "d", "nobody"])
    assert sorted(many) == ["a", "b", "c"]  # revoked and unknown devices are not active
    for device in ("a", "b", "c"):
        assert many[device] == hub.control.desired_state(device)
    states = {device: agent_pb2.DesiredState.FromString(signed.desired_state) for device, signed in many.items()}
    assert [m.name for m in states["a"].services] == ["other", "svc"]
    assert [m.name for m in states["b"].services] == ["svc"]
    assert states["c"].services == [] and states["c"].device_id == "c"


def test_bad_deploy_inputs(hub: HubServices, tmp_path: Path) -> None:
    enroll(hub, "a", ["zone=x"])
    v1 = _register(hub, tmp_path, "digits", b"one")
    with pytest.raises(NotFound, match="model 'nope' not found"):
        hub.deployments.create({"name": "s", "models": ["nope:1"], "target": "a"})
    with pytest.raises(NotFound, match="has no version 9"):
        hub.deployments.create({"name": "s", "models": ["digits:9"], "target": "a"})
    with pytest.raises(BadInput, match="selects no device"):
        hub.deployments.create({"name": "s", "models": [f"digits:{v1}"], "target": "zone=mars"})
    with pytest.raises(BadInput, match="selects no device"):
        hub.deployments.create({"name": "s", "models": [f"digits:{v1}"], "target": "ghost"})
    with pytest.raises(BadInput, match="unknown key 'replicas'"):
        hub.deployments.create({"name": "s", "models": [f"digits:{v1}"], "target": "a", "deployment": {"replicas": 2}})
    with pytest.raises(BadInput, match="was not uploaded"):
        hub.deployments.create(
            {
                "name": "s",
                "models": [f"digits:{v1}"],
                "target": "a",
                "inference": {
                    "entry_script": "score.py",
                    "source_files": [{"path": "score.py", "digest": "sha256:" + "0" * 64, "size": 1}],
                },
            }
        )
    assert hub.deployments.list() == []  # nothing half-made
    hub.deployments.create({"name": "s", "models": [f"digits:{v1}"], "target": "a"})
    with pytest.raises(Conflict, match="already exists"):
        hub.deployments.create({"name": "s", "models": [f"digits:{v1}"], "target": "a"})
    assert hub.deployments.create({"name": "s", "models": ["digits"], "target": "a"}, overwrite=True)["generation"] == 2
    with pytest.raises(NotFound, match="service nope not found"):
        hub.deployments.update("nope", {"models": ["digits:1"]})
    with pytest.raises(BadInput, match="unknown key 'model'"):
        hub.deployments.update("s", {"model": "digits:1"})


def test_update_target_moves_the_service_between_devices(hub: HubServices, tmp_path: Path) -> None:
    enroll(hub, "a", ["zone=x"])
    enroll(hub, "c", ["zone=y"])
    v1 = _register(hub, tmp_path, "digits", b"one")
    hub.deployments.create({"name": "s", "models": [f"digits:{v1}"], "target": "zone=x"})
    rev_a, rev_c = _sent(hub, "a").revision, _sent(hub, "c").revision
    view = hub.deployments.update("s", {"target": "zone=y"})
    assert [d["device"] for d in view["devices"]] == ["c"]
    a, c = _sent(hub, "a"), _sent(hub, "c")
    assert a.services == [] and a.revision > rev_a
    assert [m.name for m in c.services] == ["s"] and c.revision > rev_c
    hub.fleet.revoke("c")  # a revoked device gets nothing, and is no longer listed for the service
    assert _sent(hub, "c").services == []
    assert hub.deployments.show("s")["devices"] == []


def test_deleting_a_model_in_use_names_the_service(hub: HubServices, tmp_path: Path) -> None:
    enroll(hub, "a", [])
    v1 = _register(hub, tmp_path, "digits", b"one")
    hub.deployments.create({"name": "scorer", "models": [f"digits:{v1}"], "target": "a"})
    with pytest.raises(Conflict, match="used by service scorer"):
        hub.registry.delete_version("digits", v1)
    hub.deployments.delete("scorer")
    hub.registry.delete_version("digits", v1)


def test_old_generation_status_never_overwrites_newer(hub: HubServices, tmp_path: Path) -> None:
    enroll(hub, "a", [])
    v1 = _register(hub, tmp_path, "digits", b"one")
    hub.deployments.create({"name": "s", "models": [f"digits:{v1}"], "target": "a"})
    hub.deployments.update("s", {"deployment": {"port": 0, "healthTimeoutSeconds": 5}})
    ok = agent_pb2.DeploymentStatus(service="s", generation=2, phase=agent_pb2.HEALTHY, scoring_uri="http://x/score")
    late = agent_pb2.DeploymentStatus(service="s", generation=1, phase=agent_pb2.FAILED, message="late")
    hub.deployments.record_status("a", ok)
    hub.deployments.record_status("a", late)
    view = hub.deployments.show("s")
    assert view["state"] == "Healthy" and view["devices"][0]["scoring_uri"] == "http://x/score"


# ---- core: sessions, dedup, acks, telemetry ----


def test_core_dedups_by_seq_and_acks_cumulatively(hub: HubServices, tmp_path: Path) -> None:
    enroll(hub, "a", [])
    core = hub.control
    session, welcome = core.open_session("a", agent_pb2.Hello(device_id="a", next_seq=1), transport="test")
    assert welcome.acked_seq == 0 and core.is_online("a")

    def telemetry(seq: int) -> agent_pb2.AgentMessage:
        point = agent_pb2.TelemetryPoint(at_ms=int(time.time() * 1000), metric="agent.rss_bytes", value=seq)
        return agent_pb2.AgentMessage(seq=seq, telemetry=agent_pb2.TelemetryBatch(points=[point]))

    hub.db.db.execute("UPDATE devices SET last_seen_at = 0 WHERE id = 'a'")
    assert core.handle(session, telemetry(1)).ack.seq == 1
    assert hub.fleet.show("a")["last_seen"] > "2000"  # any stored message counts as hearing from the device
    assert core.handle(session, telemetry(3)).ack.seq == 1  # 2 missing: the ack waits
    assert core.handle(session, telemetry(3)).ack.seq == 1  # a repeat is stored once
    assert core.handle(session, telemetry(2)).ack.seq == 3
    assert len(hub.telemetry.query(device="a", metric="agent.rss_bytes")) == 3
    assert hub.telemetry.summary("a")["agent.rss_bytes"] in (1.0, 2.0, 3.0)
    out = core.outgoing(session)
    assert [m.WhichOneof("body") for m in out] == ["desired"]
    assert core.outgoing(session) == []  # nothing new
    core.close_session(session)
    assert not core.is_online("a") and not hub.fleet.show("a")["online"]
    # a new session whose first seq is past the ack: the agent lost those (outbox overflow); don't stall
    session2, welcome2 = core.open_session("a", agent_pb2.Hello(device_id="a", next_seq=10), transport="test")
    assert welcome2.acked_seq == 3
    assert core.handle(session2, telemetry(7)).ack.seq == 7


def test_the_welcome_spreads_reconnects_over_the_enrolled_fleet(
    hub: HubServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = hub.control
    assert core is not None
    for name in ("a", "b", "c"):
        enroll(hub, name, [])
    hub.fleet.create_token("pending-one", [])  # not enrolled yet: cannot be among those reconnecting
    hub.fleet.revoke("c")
    core.reconnects_per_s = 4.0
    _, welcome = core.open_session("a", agent_pb2.Hello(device_id="a"), transport="test")
    assert welcome.reconnect_spread_ms == 500  # 2 enrolled devices at 4 a second
    enroll(hub, "d", [])
    assert core.reconnect_spread_ms() == 500  # the count serves every Welcome for a while, not one query each
    clock = time.monotonic() + FLEET_SIZE_TTL_S + 1
    monkeypatch.setattr("hub.control.core.time.monotonic", lambda: clock)
    assert core.reconnect_spread_ms() == 750  # read again: 3 enrolled
    core.reconnects_per_s = 0.001
    assert core.reconnect_spread_ms() == RECONNECT_SPREAD_MAX_S * 1000  # a huge fleet waits at most this


def test_a_status_naming_a_revision_acknowledges_it_and_a_hello_does_too(hub: HubServices) -> None:
    enroll(hub, "a", [])
    core = hub.control
    session, _ = core.open_session("a", agent_pb2.Hello(device_id="a", next_seq=1), transport="test")
    assert hub.fleet.show("a")["applied_revision"] == 0
    status = agent_pb2.DeploymentStatus(service="s", generation=1, phase=agent_pb2.PULLING, desired_revision=4)
    assert core.handle(session, agent_pb2.AgentMessage(seq=1, status=status)).ack.seq == 1
    assert hub.fleet.show("a")["applied_revision"] == 4
    untagged = agent_pb2.DeploymentStatus(service="s", generation=1, phase=agent_pb2.HEALTHY)  # an older agent's
    core.handle(session, agent_pb2.AgentMessage(seq=2, status=untagged))
    assert hub.fleet.show("a")["applied_revision"] == 4
    ack = agent_pb2.AgentMessage(seq=3, desired_ack=agent_pb2.DesiredStateAck(revision=5))  # no status to ride on
    core.handle(session, ack)
    assert hub.fleet.show("a")["applied_revision"] == 5
    core.close_session(session)
    # an agent that stopped before its ack went names the revision it runs in its next Hello
    session2, _ = core.open_session("a", agent_pb2.Hello(device_id="a", next_seq=4, desired_revision=6), "test")
    assert hub.fleet.show("a")["applied_revision"] == 6
    core.close_session(session2)


def test_telemetry_retention(hub: HubServices) -> None:
    old = int((time.time() - 8 * 86400) * 1000)
    now = int(time.time() * 1000)
    batch = agent_pb2.TelemetryBatch(
        points=[
            agent_pb2.TelemetryPoint(at_ms=old, metric="m", value=1),
            agent_pb2.TelemetryPoint(at_ms=now, metric="m", value=2),
        ]
    )
    assert hub.telemetry.ingest("a", batch) == 1  # the 8-day-old point is past the 7-day retention
    assert [p["value"] for p in hub.telemetry.query(device="a")] == [2.0]
    with pytest.raises(BadInput, match="limit"):
        hub.telemetry.query(limit=0)
