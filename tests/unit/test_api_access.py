"""Who may call what on the hub's REST and OCI API: every route of the OpenAPI document walked without a
token and with a viewer's, token lifecycle, device pull tokens, and the audit log. In process, on a real
data dir (SQLite, blob store, CA)."""

from __future__ import annotations

import asyncio
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hub.access import ADMIN_TOKEN_FILE
from hub.api.app import create_app
from hub.api.auth import AuditBatches
from hub.cli.main import build_parser
from hub.cli.serve import config_from_args
from hub.errors import BadInput, Conflict
from hub.services import HubServices
from protos.edgeport.v1 import agent_pb2
from tests.unit.access_support import token_headers
from tests.unit.enrollment import enroll, enroll_request

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture
def app(hub: HubServices) -> Iterator[TestClient]:
    """The app with model digits:1, device dev-1 and service svc on it; a client with no token."""
    enroll(hub, "dev-1", ["zone=a"])
    data = b"onnx bytes"
    digest = hub.blobs.put_bytes(data)
    hub.registry.register("digits", [{"path": "model.onnx", "digest": digest, "size": len(data)}])
    service = {"name": "svc", "models": ["digits:1"], "target": "dev-1", "deployment": {"authEnabled": True}}
    hub.deployments.create(service)
    with TestClient(create_app(hub), raise_server_exceptions=False) as client:
        yield client


def _operations(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    doc = client.get("/openapi.json").json()
    return [(m.upper(), p, op) for p, ops in doc["paths"].items() for m, op in ops.items()]


def _fill(path: str, hub: HubServices) -> str:
    digest = hub.registry.get_version("digits", 1).files[0].digest
    values = {"name": "svc", "version": "1", "digest": digest, "reference": "1", "filename": "x"}
    if path.startswith("/v2/"):
        values["name"] = "models/digits"
    elif path.startswith("/api/v1/devices/"):
        values["name"] = "dev-1"
    elif path.startswith("/api/v1/models/"):
        values["name"] = "digits"
    elif path.startswith("/api/v1/tokens/"):
        values["name"] = "some-token"
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def _state(hub: HubServices) -> dict[str, Any]:
    """Every table but the audit log, and the stored blobs: what no refused call may change."""
    conn = hub.db.db.conn
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    dump = {
        t: sorted(map(repr, conn.execute(f'SELECT * FROM "{t}"').fetchall()))
        for t in tables
        if t not in ("audit_log", "sqlite_sequence")
    }
    return {"tables": dump, "blobs": sorted(hub.blobs.stored_digests())}


def test_every_route_needs_a_token_except_the_documented_open_ones(app: TestClient, hub: HubServices) -> None:
    operations = _operations(app)
    assert len(operations) > 20
    open_ones = {(m, p) for m, p, op in operations if op.get("security") == []}
    assert open_ones == {("GET", "/api/v1/health"), ("GET", "/api/v1/ca"), ("POST", "/api/v1/enroll")}
    before = _state(hub)
    for method, path, op in operations:
        if (method, path) in open_ones:
            continue
        r = app.request(method, _fill(path, hub), json={} if method in MUTATING else None)
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        if method != "HEAD":  # a HEAD answer has no body
            assert r.json()["error"]["code"] == "unauthorized" and "token" in r.json()["error"]["message"]
        assert "www-authenticate" in r.headers
        assert op["x-required-role"] in ("viewer", "deployer", "admin")
    assert app.get("/api/v1/health").json() == {"status": "ok"}
    assert app.get("/openapi.json").status_code == 200  # the API's description carries no data
    assert _state(hub) == before


def test_a_viewer_changes_nothing_and_reads_no_secret(app: TestClient, hub: HubServices) -> None:
    viewer = token_headers(hub, "viewer")
    before = _state(hub)
    refused = 0
    for method, path, op in _operations(app):
        if op.get("security") == []:
            continue
        r = app.request(method, _fill(path, hub), json={} if method in MUTATING else None, headers=viewer)
        if method in MUTATING or op["x-required-role"] != "viewer":
            assert r.status_code == 403, (method, path, r.status_code, r.text)
            message = r.json()["error"]["message"]
            assert "role viewer" in message and f"needs role {op['x-required-role']}" in message
            refused += 1
        else:
            assert r.status_code not in (401, 403), (method, path, r.text)
    assert refused > 10
    assert _state(hub) == before
    # the secrets a viewer may not read: the service's keys, the tokens, the audit log
    for path in ("/api/v1/services/svc/keys", "/api/v1/tokens", "/api/v1/audit"):
        assert app.get(path, headers=viewer).status_code == 403
    audit = hub.access.audit(who=viewer_name(hub))
    assert len([a for a in audit if a["status"] == 403]) >= refused


def viewer_name(hub: HubServices) -> str:
    return next(t["name"] for t in hub.access.list_tokens() if t["role"] == "viewer")


def test_roles_deployer_deploys_and_reads_keys_but_manages_no_device_or_token(
    app: TestClient, hub: HubServices
) -> None:
    deployer = token_headers(hub, "deployer")
    assert app.get("/api/v1/services/svc/keys", headers=deployer).status_code == 200
    regenerated = app.post("/api/v1/services/svc/keys/regenerate", json={"key": "primary"}, headers=deployer)
    assert regenerated.status_code == 200
    assert app.delete("/api/v1/services/svc", headers=deployer).status_code == 200
    refused = app.post("/api/v1/devices", json={"name": "cam-9"}, headers=deployer)
    assert refused.status_code == 403 and "needs role admin" in refused.json()["error"]["message"]
    assert app.post("/api/v1/devices/dev-1/revoke", headers=deployer).status_code == 403
    assert app.post("/api/v1/tokens", json={"name": "x", "role": "admin"}, headers=deployer).status_code == 403
    admin = token_headers(hub, "admin")
    assert app.post("/api/v1/devices", json={"name": "cam-9"}, headers=admin).status_code == 201


def test_token_lifecycle_shown_once_stored_as_hash_expires_and_revokes(app: TestClient, hub: HubServices) -> None:
    admin = token_headers(hub, "admin")
    created = app.post("/api/v1/tokens", json={"name": "ci", "role": "deployer", "expires": "30d"}, headers=admin)
    assert created.status_code == 201
    token = created.json()["token"]
    assert token.startswith("ept_") and len(token) > 40
    dump = "\n".join(hub.db.db.conn.iterdump())
    assert token not in dump  # only its hash is stored
    listed = {t["name"]: t for t in app.get("/api/v1/tokens", headers=admin).json()}
    assert listed["ci"]["role"] == "deployer" and listed["ci"]["state"] == "active" and "token" not in listed["ci"]
    assert app.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}).json() == {
        "name": "ci", "role": "deployer"
    }
    again = app.post("/api/v1/tokens", json={"name": "ci", "role": "viewer"}, headers=admin)
    assert again.status_code == 409  # names are never reused
    assert app.delete("/api/v1/tokens/ci", headers=admin).json()["state"] == "revoked"
    r = app.get("/api/v1/models", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
    assert app.delete("/api/v1/tokens/nope", headers=admin).status_code == 404
    with pytest.raises(BadInput, match="role"):
        hub.access.create_token("x", "root")
    with pytest.raises(Conflict):
        hub.access.create_token("ci", "viewer")
    short = hub.access.create_token("short", "viewer", ttl_s=1)["token"]
    assert app.get("/api/v1/models", headers={"Authorization": f"Bearer {short}"}).status_code == 200
    time.sleep(1.1)
    r = app.get("/api/v1/models", headers={"Authorization": f"Bearer {short}"})
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
    for bad in ("Bearer ept_made-up", "Bearer nonsense", "Basic !!!", "Token abc"):
        assert app.get("/api/v1/models", headers={"Authorization": bad}).status_code == 401, bad


def test_first_admin_token_is_written_0600_once_and_again_only_when_no_admin_is_left(hub: HubServices) -> None:
    first = hub.access.ensure_admin_token()
    assert first is not None
    path = hub.data_dir / ADMIN_TOKEN_FILE
    assert path.read_text().strip() == first
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert hub.access.ensure_admin_token() is None  # an admin exists: nothing new, nothing printed
    hub.access.revoke_token("admin")
    second = hub.access.ensure_admin_token()  # locked out: a restart of the hub lets its owner back in
    assert second is not None and second != first and path.read_text().strip() == second
    assert {t["name"] for t in hub.access.list_tokens()} == {"admin", "admin-2"}


def test_oci_clients_pull_with_a_token_as_password(app: TestClient, hub: HubServices) -> None:
    token = hub.access.create_token("puller", "viewer")["token"]
    r = app.get("/v2/")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic realm=")
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"  # the OCI error shape too
    assert app.get("/v2/", auth=("anyone", token)).status_code == 200
    manifest = app.get("/v2/models/digits/manifests/1", auth=("x", token))
    assert manifest.status_code == 200
    digest = hub.registry.get_version("digits", 1).files[0].digest
    for _ in range(2):  # the second GET would come from the small-blob fast path: still behind the gate
        assert app.get(f"/v2/models/digits/blobs/{digest}", auth=("x", token)).content == b"onnx bytes"
        assert app.get(f"/v2/models/digits/blobs/{digest}").status_code == 401


def test_device_pull_token_pulls_blobs_only_and_dies_with_a_revocation(app: TestClient, hub: HubServices) -> None:
    admin = token_headers(hub, "admin")
    issued = app.post("/api/v1/devices", json={"name": "cam-1"}, headers=admin).json()["token"]
    reply = app.post("/api/v1/enroll", content=enroll_request(issued).SerializeToString())  # open: proves the token
    assert reply.status_code == 200
    pull = agent_pb2.EnrollResponse.FromString(reply.content).pull_token
    assert pull.startswith("epd.cam-1.")
    device = {"Authorization": f"Bearer {pull}"}
    digest = hub.registry.get_version("digits", 1).files[0].digest
    assert app.get(f"/v2/models/digits/blobs/{digest}", headers=device).status_code == 200
    assert app.head("/v2/models/digits/manifests/1", headers=device).status_code == 200
    for method, path in (("GET", "/api/v1/models"), ("POST", "/api/v1/models")):
        r = app.request(method, path, headers=device)
        assert r.status_code == 403 and "pull token" in r.json()["error"]["message"], (method, path)
    forged = pull[:-4] + ("0000" if not pull.endswith("0000") else "1111")
    assert app.get("/v2/", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    assert app.post("/api/v1/devices/cam-1/revoke", headers=admin).status_code == 200
    time.sleep(5.1)  # checked credentials are trusted for 5 s at most
    assert app.get(f"/v2/models/digits/blobs/{digest}", headers=device).status_code == 401


def test_a_revoked_device_name_is_enrolled_again_only_with_replace(app: TestClient, hub: HubServices) -> None:
    admin = token_headers(hub, "admin")
    assert app.post("/api/v1/devices/dev-1/revoke", headers=admin).status_code == 200
    again = app.post("/api/v1/devices", json={"name": "dev-1"}, headers=admin)
    assert again.status_code == 409 and "--replace" in again.json()["error"]["message"]
    assert app.post("/api/v1/devices", json={"name": "dev-1", "replace": True}, headers=admin).status_code == 201


def test_audit_records_changes_and_refusals_with_who_where_what_result(app: TestClient, hub: HubServices) -> None:
    admin = token_headers(hub, "admin")
    admin_name = next(t["name"] for t in hub.access.list_tokens() if t["role"] == "admin")
    app.post("/api/v1/services/svc/keys/regenerate", json={"key": "secondary"}, headers=admin)
    app.delete("/api/v1/models/digits/versions/1", headers=admin)  # refused by the hub: in use
    app.get("/api/v1/models", headers=admin)  # a read: not recorded
    app.delete("/api/v1/services/svc")  # no token
    records = app.get("/api/v1/audit", params={"since": 60}, headers=admin).json()
    actions = [(r["who"], r["action"], r["status"]) for r in records]
    assert actions[:3] == [
        ("-", "DELETE /api/v1/services/svc", 401),
        (admin_name, "DELETE /api/v1/models/digits/versions/1", 409),
        (admin_name, "POST /api/v1/services/svc/keys/regenerate", 200),
    ]
    assert records[1]["result"].startswith("error: ") and "svc" in records[1]["result"]
    assert records[0]["source"] == "testclient" and records[0]["at"].endswith("Z")
    assert not any(a[1] == "GET /api/v1/models" for a in actions)
    assert [r["who"] for r in app.get("/api/v1/audit", params={"who": "-"}, headers=admin).json()] == ["-"]


def test_audit_is_bounded_in_size_and_time(hub: HubServices) -> None:
    hub.access.audit_max_rows = 50
    now = time.time()
    hub.access.record([(now - 100 * 86400, "old", "-", "POST /x", 200, "ok")])
    hub.access.record([(now, "w", "-", f"POST /{i}", 200, "ok") for i in range(120)])
    assert hub.access.trim() > 0
    kept = hub.access.audit(limit=1000)
    assert len(kept) == 50 and all(r["who"] == "w" for r in kept)
    assert kept[0]["action"] == "POST /119"  # the newest stay


def test_serve_option_sets_the_audit_retention(tmp_path: Path) -> None:
    def retention(*options: str) -> int:
        args = build_parser().parse_args(["serve", "--data-dir", str(tmp_path), *options])
        return config_from_args(args).audit_retention_s

    assert retention() == 90 * 86400
    assert retention("--audit-retention", "30d") == 30 * 86400
    with pytest.raises(BadInput, match="--audit-retention"):
        retention("--audit-retention", "0")


def test_audit_records_of_concurrent_calls_share_commits_and_are_stored_before_the_answer(hub: HubServices) -> None:
    batches: list[int] = []
    record = hub.access.record

    def counting(rows: list[tuple[float, str, str, str, int, str]]) -> None:
        batches.append(len(rows))
        record(rows)

    hub.access.record = counting  # type: ignore[method-assign]
    writer = AuditBatches(hub.access)

    async def call(i: int) -> int:
        await writer.write((time.time(), "w", "-", f"POST /{i}", 200, "ok"))
        return len(hub.access.audit(who="w", limit=1000))  # what the caller could see when answered

    seen = asyncio.run(_gather([call(i) for i in range(50)]))
    assert all(n >= i + 1 for i, n in enumerate(sorted(seen)))  # each record was stored before its answer
    assert sum(batches) == 50 and len(batches) < 50  # group commit: calls waiting together share one


async def _gather(calls: list[Any]) -> list[int]:
    return list(await asyncio.gather(*calls))
