"""The hub's OCI pull API against a real `hub serve`: manifests, blobs, HEAD, Range, digests, the stock oras client."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import oras.client
import pytest

from tests.integration.registry_support import RunningHub, hub_cli, start_hub
from tests.support import Processes, wait_for


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """One hub for the module."""
    root = tmp_path_factory.mktemp("oci-hub")
    processes = Processes(root)
    try:
        yield start_hub(processes, root / "data")
    finally:
        processes.stop_all()


@pytest.fixture(scope="module")
def model(hub: RunningHub, digits_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`digits:1`: the digits ONNX plus nested files, registered through the CLI."""
    folder = tmp_path_factory.mktemp("digits-folder")
    (folder / "model.onnx").write_bytes(digits_model.read_bytes())
    (folder / "extra" / "deep").mkdir(parents=True)
    (folder / "extra" / "deep" / "payload.bin").write_bytes(os.urandom(300_000))
    (folder / "extra" / "notes.txt").write_text("hello\n")
    result = hub_cli(hub.url, "model", "register", "-n", "digits", "-p", str(folder), "-o", "json")
    assert result.code == 0, result.err
    return {**result.json(), "folder": folder}


@pytest.fixture
def http(hub: RunningHub) -> Iterator[httpx.Client]:
    """A plain HTTP client on the hub, with its admin token (as a registry password, as OCI clients send it)."""
    with httpx.Client(base_url=hub.url, auth=("any-user", hub.token), timeout=10) as client:
        yield client


def test_base_endpoint(http: httpx.Client) -> None:
    r = http.get("/v2/")
    assert r.status_code == 200 and r.json() == {}
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"


def test_manifest_by_tag_and_digest(http: httpx.Client, model: dict[str, Any]) -> None:
    r = http.get("/v2/models/digits/manifests/1")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.oci.image.manifest.v1+json"
    digest = "sha256:" + hashlib.sha256(r.content).hexdigest()
    assert r.headers["docker-content-digest"] == digest == model["manifest_digest"]
    assert int(r.headers["content-length"]) == len(r.content)
    manifest = json.loads(r.content)
    assert manifest["artifactType"] == "application/vnd.edgeport.model.v1"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    titles = {layer["annotations"]["org.opencontainers.image.title"]: layer["digest"] for layer in manifest["layers"]}
    assert titles == {f["path"]: f["digest"] for f in model["files"]}

    by_digest = http.get(f"/v2/models/digits/manifests/{digest}")
    assert by_digest.status_code == 200 and by_digest.content == r.content
    head = http.head("/v2/models/digits/manifests/1")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["docker-content-digest"] == digest
    assert int(head.headers["content-length"]) == len(r.content)
    # the empty config blob is served too
    config = http.get(f"/v2/models/digits/blobs/{manifest['config']['digest']}")
    assert config.status_code == 200 and config.content == b"{}"


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v2/models/digits/manifests/99", 404, "MANIFEST_UNKNOWN"),
        ("/v2/models/digits/manifests/sha256:" + "0" * 64, 404, "MANIFEST_UNKNOWN"),
        ("/v2/models/nope/manifests/1", 404, "NAME_UNKNOWN"),
        ("/v2/other/digits/manifests/1", 404, "NAME_UNKNOWN"),
        ("/v2/models/digits/blobs/sha256:" + "1" * 64, 404, "BLOB_UNKNOWN"),
        ("/v2/models/digits/blobs/md5:abc", 404, "BLOB_UNKNOWN"),
        ("/v2/models/nope/blobs/sha256:" + "1" * 64, 404, "NAME_UNKNOWN"),
    ],
)
def test_unknown_things_give_oci_errors(
    http: httpx.Client, model: dict[str, Any], path: str, status: int, code: str
) -> None:
    r = http.get(path)
    assert r.status_code == status
    assert r.json()["errors"][0]["code"] == code


def test_blob_get_head_and_ranges(http: httpx.Client, model: dict[str, Any]) -> None:
    entry = next(f for f in model["files"] if f["path"] == "extra/deep/payload.bin")
    data = (model["folder"] / "extra" / "deep" / "payload.bin").read_bytes()
    url = f"/v2/models/digits/blobs/{entry['digest']}"

    full = http.get(url)
    assert full.status_code == 200 and full.content == data
    assert full.headers["docker-content-digest"] == entry["digest"]
    assert full.headers["accept-ranges"] == "bytes"
    head = http.head(url)
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) == len(data)

    cases = {
        "bytes=0-9": (0, 9),
        "bytes=1000-": (1000, len(data) - 1),
        "bytes=-500": (len(data) - 500, len(data) - 1),
        f"bytes=299990-{len(data) + 50}": (299990, len(data) - 1),  # end past the blob is clamped
    }
    for header, (start, end) in cases.items():
        r = http.get(url, headers={"Range": header})
        assert r.status_code == 206, header
        assert r.content == data[start : end + 1], header
        assert r.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
        assert int(r.headers["content-length"]) == end - start + 1
    ranged_head = http.head(url, headers={"Range": "bytes=10-19"})
    assert ranged_head.status_code == 206 and ranged_head.headers["content-range"] == f"bytes 10-19/{len(data)}"

    for bad in (f"bytes={len(data)}-", "bytes=50-10", "bytes=0-1,5-6", "items=0-1", "bytes=-0"):
        r = http.get(url, headers={"Range": bad})
        assert r.status_code == 416, bad
        assert r.headers["content-range"] == f"bytes */{len(data)}"


def test_stock_oras_client_pulls_the_files(hub: RunningHub, model: dict[str, Any], tmp_path: Path) -> None:
    client = oras.client.OrasClient(insecure=True, auth_backend="basic")
    client.auth.set_basic_auth("any-user", hub.token)  # an API token as the password, like a registry's PAT
    pulled = client.pull(target=f"127.0.0.1:{hub.port}/models/digits:1", outdir=str(tmp_path))
    assert sorted(Path(p).relative_to(tmp_path).as_posix() for p in pulled) == sorted(f["path"] for f in model["files"])
    for f in model["files"]:
        assert (tmp_path / f["path"]).read_bytes() == (model["folder"] / f["path"]).read_bytes()


def test_tags_list(http: httpx.Client, model: dict[str, Any]) -> None:
    r = http.get("/v2/models/digits/tags/list")
    assert r.status_code == 200 and r.json() == {"name": "models/digits", "tags": ["1"]}
    assert http.get("/v2/models/nope/tags/list").json()["errors"][0]["code"] == "NAME_UNKNOWN"


def test_openapi_document(http: httpx.Client) -> None:
    doc = http.get("/openapi.json").json()
    for path in ("/api/v1/models", "/api/v1/blobs/{digest}", "/v2/{name}/blobs/{digest}"):
        assert path in doc["paths"], path


def test_blob_upload_api_rejects_bad_content(http: httpx.Client, hub: RunningHub) -> None:
    content = b"some bytes"
    good = "sha256:" + hashlib.sha256(content).hexdigest()
    wrong = "sha256:" + hashlib.sha256(b"other").hexdigest()
    before = set((hub.data_dir / "blobs" / "sha256").iterdir())
    r = http.put(f"/api/v1/blobs/{wrong}", content=content)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_input"
    assert "uploaded content has digest" in r.json()["error"]["message"]
    assert http.put("/api/v1/blobs/sha256:XYZ", content=content).status_code == 400
    assert set((hub.data_dir / "blobs" / "sha256").iterdir()) == before  # no temp file, no blob
    assert http.head(f"/api/v1/blobs/{good}").status_code == 404
    assert http.put(f"/api/v1/blobs/{good}", content=content).status_code == 201
    assert http.head(f"/api/v1/blobs/{good}").status_code == 200
    # registering a file whose blob was never uploaded is refused, nothing created
    body = {"name": "ghost", "files": [{"path": "m.onnx", "digest": wrong, "size": 5}]}
    r = http.post("/api/v1/models", json=body)
    assert r.status_code == 400 and "has not been uploaded" in r.json()["error"]["message"]
    r = http.post("/api/v1/models", json={"name": "ghost", "files": [{"path": "../m", "digest": good, "size": 10}]})
    assert r.status_code == 400 and "must be relative" in r.json()["error"]["message"]
    r = http.post("/api/v1/models", json={"name": "ghost", "files": "nope"})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("invalid request: body.files")
    assert http.get("/api/v1/models/ghost").status_code == 404


def test_interrupted_upload_leaves_nothing(hub: RunningHub, http: httpx.Client) -> None:
    data = os.urandom(1_000_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    before = set((hub.data_dir / "blobs" / "sha256").iterdir())
    with socket.create_connection(("127.0.0.1", hub.port)) as conn:  # half a body, then the client goes away
        head = f"PUT /api/v1/blobs/{digest} HTTP/1.1\r\nHost: hub\r\nContent-Length: {len(data)}\r\n\r\n"
        conn.sendall(head.encode() + data[:300_000])
        time.sleep(0.3)
    wait_for(lambda: set((hub.data_dir / "blobs" / "sha256").iterdir()) == before, timeout=10, what="temp removed")
    assert http.head(f"/api/v1/blobs/{digest}").status_code == 404
