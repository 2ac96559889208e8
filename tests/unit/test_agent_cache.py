"""ArtifactCache and its RegistryClient against a real loopback HTTP blob server: verify, Range resume,
LRU eviction, corruption, keep-alive connections."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import agent.registry_client as registry_client
from agent.cache import ArtifactCache, CacheError
from agent.layout import blobs_of, lay_out
from agent.registry_client import RegistryClient
from protos.edgeport.v1 import agent_pb2


class _BlobServer(http.server.ThreadingHTTPServer):
    blobs: dict[str, bytes]
    requests: list[tuple[str, str | None]]
    cut_after: int | None  # close the connection after this many body bytes (simulated network cut)
    honour_range: bool


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _BlobServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        digest = self.path.rsplit("/", 1)[-1]
        rng = self.headers.get("Range")
        self.server.requests.append((self.path, rng))
        data = self.server.blobs.get(digest)
        if data is None:
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b'{"error": "blob unknown"}')
            return
        start = 0
        if rng and self.server.honour_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.cut_after is not None:
            self.wfile.write(body[: self.server.cut_after])
            self.wfile.flush()
            self.server.cut_after = None
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[_BlobServer]:
    srv = _BlobServer(("127.0.0.1", 0), _Handler)
    srv.blobs, srv.requests, srv.cut_after, srv.honour_range = {}, [], None, True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _add(server: _BlobServer, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    server.blobs[digest] = data
    return digest


def _url(server: _BlobServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def fetch(cache: ArtifactCache, *args: object) -> Path:
    async def fetch_and_close() -> Path:
        try:
            return await cache.fetch(*args)  # type: ignore[arg-type]
        finally:
            cache.client.close()  # pooled connections close on their own loop, not at GC after it closed

    return asyncio.run(fetch_and_close())


def test_fetch_verifies_and_second_fetch_is_local(tmp_path: Path, server: _BlobServer) -> None:
    data = os.urandom(300_000)
    digest = _add(server, data)
    cache = ArtifactCache(tmp_path)
    path = fetch(cache, _url(server), "models/digits", digest, len(data))
    assert path.read_bytes() == data and cache.has(digest)
    assert server.requests == [(f"/v2/models/digits/blobs/{digest}", None)]
    fetch(cache, _url(server), "models/digits", digest, len(data))
    assert len(server.requests) == 1  # verified blob: never pulled again
    assert not os.access(path, os.W_OK) or os.geteuid() == 0  # read-only for everyone but root


def test_interrupted_pull_resumes_with_range(tmp_path: Path, server: _BlobServer) -> None:
    data = os.urandom(500_000)
    digest = _add(server, data)
    cache = ArtifactCache(tmp_path)
    server.cut_after = 200_000
    with pytest.raises(CacheError, match="bytes"):
        fetch(cache, _url(server), "models/big", digest, len(data))
    partial = tmp_path / "partial" / f"{digest.split(':')[1]}.partial"
    assert partial.stat().st_size == 200_000
    path = fetch(cache, _url(server), "models/big", digest, len(data))
    assert path.read_bytes() == data
    assert server.requests[-1][1] == "bytes=200000-"
    assert not partial.exists()


def test_server_ignoring_range_restarts_from_zero(tmp_path: Path, server: _BlobServer) -> None:
    data = os.urandom(100_000)
    digest = _add(server, data)
    cache = ArtifactCache(tmp_path)
    server.cut_after = 30_000
    with pytest.raises(CacheError):
        fetch(cache, _url(server), "m", digest, len(data))
    server.honour_range = False
    assert fetch(cache, _url(server), "m", digest, len(data)).read_bytes() == data


def test_corrupt_blob_is_rejected_and_not_kept(tmp_path: Path, server: _BlobServer) -> None:
    good = b"the real bytes" * 1000
    digest = "sha256:" + hashlib.sha256(good).hexdigest()
    server.blobs[digest] = good[:-1] + b"X"  # same size, wrong content
    cache = ArtifactCache(tmp_path)
    with pytest.raises(CacheError, match="corrupt"):
        fetch(cache, _url(server), "m", digest, len(good))
    assert not cache.has(digest)
    assert list((tmp_path / "partial").iterdir()) == []


@pytest.mark.parametrize("size_known", [True, False])
def test_zero_and_one_byte_blobs_are_fetched_like_any_other(
    tmp_path: Path, server: _BlobServer, size_known: bool
) -> None:
    cache = ArtifactCache(tmp_path)
    for data in (b"", b"\n"):  # an empty __init__.py, a one-byte file
        digest = _add(server, data)
        path = fetch(cache, _url(server), "src/app", digest, len(data) if size_known else -1)
        assert path.read_bytes() == data and cache.has(digest)
    assert list((tmp_path / "partial").iterdir()) == []


def test_a_zero_byte_blob_with_a_wrong_digest_is_refused(tmp_path: Path, server: _BlobServer) -> None:
    digest = "sha256:" + hashlib.sha256(b"not empty").hexdigest()
    server.blobs[digest] = b""
    with pytest.raises(CacheError, match="digest mismatch"):
        fetch(ArtifactCache(tmp_path), _url(server), "m", digest, 0)


def test_many_files_with_the_same_content_are_pulled_once(tmp_path: Path, server: _BlobServer) -> None:
    """Several services deploying at once may need one blob: one pull, and each gets the verified file."""
    data = os.urandom(200_000)
    digest = _add(server, data)
    empty = _add(server, b"")
    cache = ArtifactCache(tmp_path)

    async def pull_together() -> list[Path]:
        try:
            return await asyncio.gather(
                *(cache.fetch(_url(server), "m", d, n) for d, n in [(digest, len(data)), (empty, -1)] * 8)
            )
        finally:
            cache.client.close()

    paths = asyncio.run(pull_together())
    assert {p.read_bytes() for p in paths} == {data, b""}
    assert sorted(path for path, _ in server.requests) == sorted(
        [f"/v2/m/blobs/{digest}", f"/v2/m/blobs/{empty}"]
    )  # each blob went over the network once
    assert list((tmp_path / "partial").iterdir()) == [] and cache._pulling == {}


def test_lay_out_places_many_files_with_the_same_content(tmp_path: Path, server: _BlobServer) -> None:
    """A source folder of score.py and several empty __init__.py files: every file laid out, from one blob each."""
    script = b"def init():\n    pass\n\ndef run(raw):\n    return raw\n"
    files = {"score.py": script, "__init__.py": b"", "pkg/__init__.py": b"", "pkg/sub/__init__.py": b"",
             "copy_of_score.py": script}  # fmt: skip
    refs = [agent_pb2.FileRef(path=name, digest=_add(server, data), size=len(data)) for name, data in files.items()]
    source = agent_pb2.SourceBundle(repository="src/svc", entry_script="score.py", files=refs)
    manifest = agent_pb2.ServiceManifest(name="svc", generation=1, source=source)
    cache = ArtifactCache(tmp_path / "cache")
    for repo, ref in blobs_of(manifest):
        fetch(cache, _url(server), repo, ref.digest, ref.size)
    assert len(server.requests) == 1  # one script pulled once; a blob known to be empty needs no pull
    layout = lay_out(cache, manifest, tmp_path / "gen")
    assert layout.source_dir is not None
    assert {name: (layout.source_dir / name).read_bytes() for name in files} == files


def test_wrong_size_missing_blob_and_bad_digest(tmp_path: Path, server: _BlobServer) -> None:
    data = b"abc" * 100
    digest = _add(server, data)
    cache = ArtifactCache(tmp_path)
    with pytest.raises(CacheError, match="interrupted at 300 of 301"):
        fetch(cache, _url(server), "m", digest, 301)
    with pytest.raises(CacheError, match="got 300 bytes, expected 299"):
        fetch(cache, _url(server), "m", digest, 299)
    with pytest.raises(CacheError, match="HTTP 404"):
        fetch(cache, _url(server), "m", "sha256:" + "0" * 64, 10)
    with pytest.raises(CacheError, match="malformed digest"):
        fetch(cache, _url(server), "m", "md5:abcd", 10)
    assert not cache.has(digest)


def test_lru_eviction_keeps_what_is_in_use(tmp_path: Path, server: _BlobServer) -> None:
    cache = ArtifactCache(tmp_path, max_bytes=2500)
    digests = []
    for i in range(4):
        d = _add(server, bytes([i]) * 1000)
        fetch(cache, _url(server), "m", d, 1000)
        os.utime(cache.path(d), (time.time() - 100 + i, time.time() - 100 + i))  # d0 oldest ... d3 newest
        digests.append(d)
    cache.touch(digests[1])  # d1 used just now: newest
    evicted = cache.evict(keep={digests[0]})  # d0 is oldest but in use by a service
    assert evicted == [digests[2], digests[3]]
    assert cache.has(digests[0]) and cache.has(digests[1])
    assert cache.usage() == 2000


class _KeepAliveHandler(_Handler):
    protocol_version = "HTTP/1.1"  # keep-alive, like uvicorn

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1  # type: ignore[attr-defined]
        self.server.sockets.append(self.connection)  # type: ignore[attr-defined]


@pytest.fixture
def keepalive_server() -> Iterator[_BlobServer]:
    srv = _BlobServer(("127.0.0.1", 0), _KeepAliveHandler)
    srv.blobs, srv.requests, srv.cut_after, srv.honour_range = {}, [], None, True
    srv.connections, srv.sockets = 0, []  # type: ignore[attr-defined]
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def test_pulls_of_one_process_share_keepalive_connections(tmp_path: Path, keepalive_server: _BlobServer) -> None:
    digests = [_add(keepalive_server, os.urandom(5000 + i)) for i in range(5)]
    client = RegistryClient()
    caches = [ArtifactCache(tmp_path / f"c{i}", client=client) for i in range(2)]  # two agents, one process

    async def pull_all() -> list[bytes]:
        paths = [await cache.fetch(_url(keepalive_server), "m", d) for d in digests for cache in caches]
        client.close()
        return [p.read_bytes() for p in paths]

    got = asyncio.run(pull_all())
    assert [hashlib.sha256(b).hexdigest() for b in got] == [d.removeprefix("sha256:") for d in digests for _ in "ab"]
    assert len(keepalive_server.requests) == 10
    assert keepalive_server.connections == 1  # type: ignore[attr-defined]


def test_concurrent_pulls_open_at_most_max_connections(tmp_path: Path, keepalive_server: _BlobServer) -> None:
    digests = [_add(keepalive_server, os.urandom(20_000 + i)) for i in range(12)]
    client = RegistryClient(max_connections=3)

    async def pull_all() -> None:
        caches = [ArtifactCache(tmp_path / f"c{i}", client=client) for i in range(len(digests))]
        await asyncio.gather(*(c.fetch(_url(keepalive_server), "m", d) for c, d in zip(caches, digests, strict=True)))
        client.close()

    asyncio.run(pull_all())
    assert len(keepalive_server.requests) == 12
    assert 1 <= keepalive_server.connections <= 3  # type: ignore[attr-defined]


def test_a_pooled_connection_the_server_closed_is_replaced(tmp_path: Path, keepalive_server: _BlobServer) -> None:
    first, second = _add(keepalive_server, b"a" * 3000), _add(keepalive_server, b"b" * 3000)
    client = RegistryClient()
    cache = ArtifactCache(tmp_path / "c", client=client)

    async def pulls() -> bytes:
        await cache.fetch(_url(keepalive_server), "m", first)
        for sock in keepalive_server.sockets:  # type: ignore[attr-defined]
            sock.shutdown(socket.SHUT_RDWR)  # the server side of the idle connection goes away (idle timeout)
        path = await cache.fetch(_url(keepalive_server), "m", second)
        client.close()
        return path.read_bytes()

    assert asyncio.run(pulls()) == b"b" * 3000
    assert keepalive_server.connections == 2  # type: ignore[attr-defined]


def test_idle_connections_past_their_age_are_not_reused(
    tmp_path: Path, keepalive_server: _BlobServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_client, "IDLE_S", 0.0)
    client = RegistryClient()
    cache = ArtifactCache(tmp_path / "c", client=client)

    async def pulls() -> None:
        for data in (b"x" * 100, b"y" * 100):
            await cache.fetch(_url(keepalive_server), "m", _add(keepalive_server, data))
        client.close()

    asyncio.run(pulls())
    assert keepalive_server.connections == 2  # type: ignore[attr-defined]


def test_unreachable_registry_is_a_transient_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens here once closed
    with pytest.raises(CacheError, match="cannot connect") as info:
        fetch(ArtifactCache(tmp_path), f"http://127.0.0.1:{port}", "m", "sha256:" + "1" * 64, 10)
    assert info.value.transient


def test_a_registry_that_stops_answering_times_out(tmp_path: Path) -> None:
    with socket.socket() as listener:  # accepts (the kernel's backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        cache = ArtifactCache(tmp_path, client=RegistryClient(timeout_s=0.3))
        started = time.monotonic()
        with pytest.raises(CacheError, match="no answer") as info:
            fetch(cache, f"http://127.0.0.1:{listener.getsockname()[1]}", "m", "sha256:" + "2" * 64, 10)
    assert info.value.transient and time.monotonic() - started < 5


def test_a_malformed_answer_is_a_transient_error(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"this is not HTTP\r\n\r\n")

        t = threading.Thread(target=answer, daemon=True)
        t.start()
        with pytest.raises(CacheError, match="malformed HTTP answer") as info:
            fetch(ArtifactCache(tmp_path), f"http://127.0.0.1:{listener.getsockname()[1]}", "m", "sha256:" + "3" * 64)
        t.join(5)
    assert info.value.transient


def test_usage_is_kept_in_memory_and_eviction_still_starts_past_the_bound(
    tmp_path: Path, server: _BlobServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ArtifactCache(tmp_path, max_bytes=2500)
    first = _add(server, b"1" * 1000)
    fetch(cache, _url(server), "m", first, 1000)
    assert cache.evict(keep=set()) == []  # scans once: 1,000 bytes, under the bound
    scans = []
    real_iterdir = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: scans.append(self) or real_iterdir(self))
    second = _add(server, b"2" * 1000)
    fetch(cache, _url(server), "m", second, 1000)
    assert cache.evict(keep=set()) == [] and scans == []  # 2,000 bytes: known without a scan
    os.utime(cache.path(first), (time.time() - 100, time.time() - 100))  # the oldest
    third = _add(server, b"3" * 1000)
    fetch(cache, _url(server), "m", third, 1000)
    assert cache.evict(keep=set()) == [first] and len(scans) == 1  # past the bound: scanned, oldest went
    assert cache.usage() == 2000
