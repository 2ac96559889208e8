"""The small-blob fast path of the OCI endpoint answers exactly like the regular route, and never serves bad bytes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest

from hub.api.app import create_app
from hub.services import HubServices
from tests.unit.access_support import token_headers


def _register(hub: HubServices, tmp_path: Path, name: str, content: bytes) -> str:
    path = tmp_path / f"{name}.bin"
    path.write_bytes(content)
    digest = hub.blobs.put_file(path)
    hub.registry.register(name, [{"path": "model.onnx", "digest": digest, "size": len(content)}])
    return digest


def _headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in ("date", "server")}


def _client(hub: HubServices) -> httpx.AsyncClient:
    # In process, through the app's whole middleware stack (the fast path is a middleware, behind the access gate).
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(hub)), base_url="http://hub", headers=token_headers(hub, "viewer")
    )


pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_fast_path_answers_like_the_regular_route(hub: HubServices, tmp_path: Path) -> None:
    content = os.urandom(5000)
    digest = _register(hub, tmp_path, "m", content)
    client = _client(hub)
    url = f"/v2/models/m/blobs/{digest}"
    first = await client.get(url)  # repository not seen yet: the regular route answers (and records it)
    assert hub.artifacts.repository_seen("models/m")
    second = await client.get(url)  # now the fast path
    assert first.status_code == second.status_code == 200
    assert first.content == second.content == content
    assert _headers(first) == _headers(second)
    ranged = await client.get(url, headers={"Range": "bytes=10-19"})  # ranges stay on the regular route
    assert ranged.status_code == 206 and ranged.content == content[10:20]


async def test_changed_blob_file_is_never_served_from_memory(hub: HubServices, tmp_path: Path) -> None:
    content = os.urandom(4000)
    digest = _register(hub, tmp_path, "m", content)
    client = _client(hub)
    url = f"/v2/models/m/blobs/{digest}"
    assert (await client.get(url)).content == content
    assert (await client.get(url)).content == content  # cached in memory now
    path = hub.blobs.path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(os.urandom(4000))  # same size, other bytes: the cache must notice the file changed
    r = await client.get(url)
    assert r.status_code == 500 and "is corrupt on disk" in r.json()["errors"][0]["message"]
    assert hashlib.sha256(r.content).hexdigest() != digest.split(":")[1]


async def test_unknown_repository_and_blob_get_oci_errors(hub: HubServices, tmp_path: Path) -> None:
    digest = _register(hub, tmp_path, "m", b"x" * 100)
    client = _client(hub)
    assert (await client.get(f"/v2/models/m/blobs/{digest}")).status_code == 200
    r = await client.get(f"/v2/models/other/blobs/{digest}")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    r = await client.get(f"/v2/models/m/blobs/sha256:{'0' * 64}")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


async def test_big_blobs_stream_through_the_regular_route(hub: HubServices, tmp_path: Path) -> None:
    content = os.urandom(3 * 1024 * 1024)
    digest = _register(hub, tmp_path, "big", content)
    client = _client(hub)
    for _ in range(2):
        r = await client.get(f"/v2/models/big/blobs/{digest}")
        assert r.status_code == 200 and r.content == content
