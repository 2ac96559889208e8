"""Every route of the hub's OpenAPI document, walked with hostile path values, queries and bodies: never a 5xx.

The hub runs in process on a real data dir (SQLite, blob store, CA) with one model, one device
and one service, so well-formed parts of a request reach the real code behind each route.
Afterwards what was stored before the walk is still there, unchanged and intact.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hub.api import blobs as blob_routes
from hub.api.app import create_app
from hub.api.limits import MAX_BLOB_BYTES, MAX_BODY_BYTES, MAX_JSON_DEPTH, json_depth_exceeds
from hub.services import HubServices
from tests.unit.access_support import token_headers
from tests.unit.enrollment import enroll

HOSTILE_TEXT = [
    "40995580000145850368",  # past int64
    "9223372036854775808",  # int64 max + 1
    "9223372036854775807",  # int64 max
    "-1",
    "0",
    "-9223372036854775809",
    "1e309",
    "NaN",
    "x" * 10_000,
    "..",
    "../../etc/passwd",
    ".",
    "%00",
    "\x00",
    "a\nb",
    "\u202e\u0661\u0662",  # right-to-left mark and Arabic-Indic digits
    "\u00b2",  # a digit to str.isdigit(), not to int()
    "\U0001f600" * 100,
    "sha256:" + "\u0660" * 64,
    "sha256:" + "A" * 64,
    "sha256:" + "0" * 65,
    " ",
]
HOSTILE_JSON: list[Any] = [
    10**30, -(10**30), 2**63, -1, 0, 1e308, -1e308, True, None, "", "x" * 10_000, "..", "\u0000", "\u00b2",
    [], {}, [[[]]], {"a": {"b": {}}}, ["x"] * 1000,
]


def _quote(value: str) -> str:
    # Dots quoted too, so the client sends '..' as a value rather than resolving it as a path step.
    return urllib.parse.quote(value, safe="").replace(".", "%2E")


@pytest.fixture
def setup(hub: HubServices) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The app with a model `digits:1`, a device `dev-1` and a service `svc` on it; plausible path values."""
    enroll(hub, "dev-1", ["zone=a"])
    data = b"onnx bytes"
    digest = hub.blobs.put_bytes(data)
    hub.registry.register("digits", [{"path": "model.onnx", "digest": digest, "size": len(data)}])
    hub.deployments.create({"name": "svc", "models": ["digits:1"], "target": "dev-1"})
    plausible = {
        "name": "digits", "version": "1", "digest": digest, "reference": "1", "device": "dev-1", "service": "svc",
    }
    with TestClient(create_app(hub), headers=token_headers(hub), raise_server_exceptions=False) as client:
        yield client, plausible


def _routes(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    doc = client.get("/openapi.json").json()
    return [(method.upper(), path, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


def _fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def _plausible_for(path: str, plausible: dict[str, str]) -> dict[str, str]:
    values = {k: _quote(v) for k, v in plausible.items()}
    if path.startswith("/v2/"):
        values["name"] = "models/digits"
    elif path.startswith(("/api/v1/devices/",)):
        values["name"] = "dev-1"
    elif path.startswith("/api/v1/services/"):
        values["name"] = "svc"
    return values


def _check(response: Any, what: str, failures: list[str]) -> None:
    if response.status_code >= 500:
        failures.append(f"{what} -> {response.status_code} {response.text[:200]}")
        return
    if response.status_code >= 400 and response.request.method != "HEAD":
        body = response.json()
        if "error" not in body or "message" not in body["error"]:
            failures.append(f"{what} -> {response.status_code} without the JSON error body: {response.text[:200]}")


def test_hostile_path_values_never_answer_5xx(setup: tuple[TestClient, dict[str, str]], hub: HubServices) -> None:
    client, plausible = setup
    before = _stored(client, hub)
    failures: list[str] = []
    routes = _routes(client)
    assert len(routes) >= 25  # the walk covers the whole document
    for method, path, _ in routes:
        names = re.findall(r"\{(\w+)\}", path)
        for name in names:
            for value in HOSTILE_TEXT:
                values = _plausible_for(path, plausible)
                values[name] = _quote(value)
                url = _fill(path, values)
                _check(client.request(method, url), f"{method} {path} {name}={value[:40]!r}", failures)
        if names:  # every parameter hostile at once
            url = _fill(path, {n: _quote("9" * 30) for n in names})
            _check(client.request(method, url), f"{method} {path} all huge", failures)
    assert not failures, "\n".join(failures)
    assert _stored(client, hub) == before


def test_hostile_queries_never_answer_5xx(setup: tuple[TestClient, dict[str, str]], hub: HubServices) -> None:
    client, plausible = setup
    failures: list[str] = []
    for method, path, op in _routes(client):
        queries = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
        url = _fill(path, _plausible_for(path, plausible))
        for query in queries:
            for value in HOSTILE_TEXT:
                what = f"{method} {path}?{query}={value[:40]!r}"
                _check(client.request(method, url, params={query: value}), what, failures)
    assert not failures, "\n".join(failures)


def _valid_bodies(plausible: dict[str, str]) -> dict[tuple[str, str], Any]:
    digest = plausible["digest"]
    return {
        ("POST", "/api/v1/models"): {"name": "digits", "files": [{"path": "model.onnx", "digest": digest, "size": 10}],
                                     "tags": {"k": "v"}, "description": "d", "framework": "onnx"},
        ("POST", "/api/v1/devices"): {"name": "dev-2", "labels": {"zone": "b"}, "expires": "1h"},
        ("POST", "/api/v1/services"): {
            "name": "svc2", "models": ["digits:1"], "target": "dev-1", "overwrite": False,
            "deployment": {"port": 5001},
            "inference": {"entry_script": "score.py",
                          "source_files": [{"path": "score.py", "digest": digest, "size": 10}],
                          "requirements": ["numpy"], "environment_variables": {"A": "1"}},
        },
        ("PATCH", "/api/v1/services/{name}"): {"models": ["digits:1"], "target": "dev-1", "deployment": {"port": 5002}},
        ("POST", "/api/v1/services/{name}/keys/regenerate"): {"key": "primary"},
        ("POST", "/api/v1/blobs/gc"): {"grace_s": 3600},
    }


def _leaves(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, (*at, i))


def _replaced(value: Any, at: tuple[Any, ...], new: Any) -> Any:
    if not at:
        return new
    copy = json.loads(json.dumps(value))
    target = copy
    for step in at[:-1]:
        target = target[step]
    target[at[-1]] = new
    return copy


def test_hostile_bodies_never_answer_5xx(setup: tuple[TestClient, dict[str, str]], hub: HubServices) -> None:
    client, plausible = setup
    before = _stored(client, hub)
    failures: list[str] = []
    deep = "[" * 100_000 + "]" * 100_000
    deep_inside = '{"name": "x", "deployment": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}"
    raw_bodies = {
        "deep array": deep.encode(),
        "deep object in a field": deep_inside.encode(),
        "not JSON": b"{",
        "not UTF-8": b"\xff\xfe\x00{",
        "empty": b"",
        "a number": b"1e999999",
        "huge": b'{"name": "' + b"x" * (MAX_BODY_BYTES + 10) + b'"}',
    }
    valid = _valid_bodies(plausible)
    for method, path, _ in _routes(client):
        if method not in ("POST", "PUT", "PATCH", "DELETE"):
            continue
        url = _fill(path, _plausible_for(path, plausible))
        for label, raw in raw_bodies.items():
            for content_type in ("application/json", None) if label != "huge" else ("application/json",):
                headers = {"content-type": content_type} if content_type else {}
                response = client.request(method, url, content=raw, headers=headers)
                _check(response, f"{method} {path} body {label}", failures)
                if label == "huge" and path != "/api/v1/blobs/{digest}":
                    assert response.status_code == 413, (method, path)
                if label.startswith("deep") and path not in ("/api/v1/blobs/{digest}", "/api/v1/enroll"):
                    assert response.status_code == 400, (method, path, label)
        body = valid.get((method, path))
        if body is None:
            continue
        for at in _leaves(body):
            for new in HOSTILE_JSON:
                response = client.request(method, url, json=_replaced(body, at, new))
                _check(response, f"{method} {path} {at}={str(new)[:40]}", failures)
    assert not failures, "\n".join(failures)
    assert {k: v for k, v in _stored(client, hub).items() if k != "devices"} == {
        k: v for k, v in before.items() if k != "devices"
    }


def _stored(client: TestClient, hub: HubServices) -> dict[str, Any]:
    """What the hub holds that bad input must never change: model digits:1 with intact blobs, the database."""
    version = client.get("/api/v1/models/digits/versions/1").json()
    assert all(hub.blobs.is_intact(f["digest"]) for f in version["files"])
    assert hub.db.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    return {"digits:1": version, "devices": client.get("/api/v1/devices").json()}


def test_the_depth_check_skips_strings() -> None:
    assert not json_depth_exceeds(b'{"a": "' + b"[" * 1000 + b'"}', MAX_JSON_DEPTH)
    assert not json_depth_exceeds(b'{"a": "\\"[[[["}', 3)
    assert json_depth_exceeds(b"[" * (MAX_JSON_DEPTH + 1), MAX_JSON_DEPTH)
    assert not json_depth_exceeds(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, MAX_JSON_DEPTH)


def test_a_blob_upload_announcing_more_than_the_limit_is_refused_before_reading(hub: HubServices) -> None:
    app = create_app(hub)
    sent: list[dict[str, Any]] = []
    digest = "sha256:" + "ab" * 32
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "PUT", "scheme": "http",
        "path": f"/api/v1/blobs/{digest}", "raw_path": f"/api/v1/blobs/{digest}".encode(), "query_string": b"",
        "root_path": "", "headers": [(b"content-length", str(MAX_BLOB_BYTES + 1).encode()),
                                     *[(k.lower().encode(), v.encode()) for k, v in token_headers(hub).items()]],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 7070),
    }

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["code"] == "payload_too_large"
    assert list(hub.blobs.dir.iterdir()) == [hub.blobs.path(d) for d in hub.blobs.stored_digests()]  # no temp file


def test_a_chunked_blob_upload_past_the_limit_stops_and_leaves_nothing(
    hub: HubServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blob_routes, "MAX_BLOB_BYTES", 1000)
    data = b"y" * 5000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size is only known while reading
        for i in range(0, len(data), 500):
            yield data[i : i + 500]

    with TestClient(create_app(hub), headers=token_headers(hub)) as client:
        refused = client.put(f"/api/v1/blobs/{digest}", content=chunks())
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "payload_too_large"
    assert not hub.blobs.exists(digest)
    assert list(hub.blobs.dir.iterdir()) == [hub.blobs.path(d) for d in hub.blobs.stored_digests()]  # no temp file
