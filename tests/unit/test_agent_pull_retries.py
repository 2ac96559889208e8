"""A pull the registry keeps refusing (a blob damaged on the hub's disk answers 500) is retried for a bounded
window, then the generation fails saying why; an unreachable registry (the device offline) is retried on."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cache import ArtifactCache, CacheError
from agent.environments import EnvironmentCache
from agent.reconciler import Reconciler
from agent.state import AgentState
from agent.supervisor import Supervisor
from protos.edgeport.v1 import agent_pb2

WEIGHTS = b"weights"
DIGEST = "sha256:" + hashlib.sha256(WEIGHTS).hexdigest()
HUB_SAYS = f"blob {DIGEST} is corrupt on disk (/srv/hub/blobs/sha256/x: 7 bytes hash to sha256:0); not served"


class _CorruptHandler(http.server.BaseHTTPRequestHandler):
    """Answers every pull as the hub answers one for a blob damaged on its disk."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps({"error": {"code": "storage_error", "message": HUB_SAYS},
                           "errors": [{"code": "UNKNOWN", "message": HUB_SAYS, "detail": None}]}).encode()  # fmt: skip
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def corrupt_registry() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CorruptHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _manifest() -> agent_pb2.ServiceManifest:
    ref = agent_pb2.FileRef(path="weights.bin", digest=DIGEST, size=len(WEIGHTS))
    model = agent_pb2.ModelArtifact(name="m", version=1, repository="models/m", files=[ref])
    return agent_pb2.ServiceManifest(name="svc", generation=1, models=[model])


def _converge(tmp_path: Path, registry: str, window_s: float, run_s: float) -> list[agent_pb2.DeploymentStatus]:
    """Run a reconciler with `svc` desired for `run_s` seconds; the statuses it reported."""
    state = AgentState(tmp_path / "agent")
    reports: list[agent_pb2.DeploymentStatus] = []
    cache = ArtifactCache(tmp_path / "cache")
    rec = Reconciler(state, cache, EnvironmentCache(tmp_path / "envs"), Supervisor(tmp_path / "logs"),
                     reports.append, services_dir=tmp_path / "services", default_registry=registry,
                     pull_retry_window_s=window_s)  # fmt: skip

    async def scenario() -> None:
        loop_task = asyncio.create_task(rec.run())
        try:
            rec.desired_changed(agent_pb2.DesiredState(revision=1, services=[_manifest()]))
            deadline = time.monotonic() + run_s
            while time.monotonic() < deadline and not any(r.phase == agent_pb2.FAILED for r in reports):
                await asyncio.sleep(0.05)
        finally:
            loop_task.cancel()
            await rec.stop_all()
            cache.client.close()

    asyncio.run(scenario())
    state.close()
    return reports


def test_the_hubs_corrupt_answer_is_named_in_the_error(tmp_path: Path, corrupt_registry: str) -> None:
    async def pull() -> None:
        cache = ArtifactCache(tmp_path)
        try:
            await cache.fetch(corrupt_registry, "models/m", DIGEST, len(WEIGHTS))
        finally:
            cache.client.close()

    with pytest.raises(CacheError) as info:
        asyncio.run(pull())
    assert info.value.transient and info.value.status == 500
    assert str(info.value) == f"the registry {corrupt_registry} says blob {DIGEST} of models/m is corrupt: {HUB_SAYS}"


def test_a_refused_pull_fails_the_generation_once_the_window_closes(tmp_path: Path, corrupt_registry: str) -> None:
    started = time.monotonic()
    reports = _converge(tmp_path, corrupt_registry, window_s=1.5, run_s=20)
    took = time.monotonic() - started
    failed = [r for r in reports if r.phase == agent_pb2.FAILED]
    assert failed, [r.message for r in reports]
    assert failed[0].message == (
        f"the registry {corrupt_registry} says blob {DIGEST} of models/m is corrupt: {HUB_SAYS}"
        " (still refused after retrying for 1.5s)"
    )
    pulls = [r for r in reports if r.phase == agent_pb2.PULLING and "retrying in" in r.message]
    assert len(pulls) >= 1  # retried within the window before giving up
    assert 1.5 <= took < 10


def test_an_unreachable_registry_is_retried_past_the_window(tmp_path: Path) -> None:
    reports = _converge(tmp_path, "http://127.0.0.1:9", window_s=0.5, run_s=2.5)  # nobody listens on port 9
    assert not any(r.phase == agent_pb2.FAILED for r in reports), [r.message for r in reports]
    assert any("cannot connect" in r.message and "retrying in" in r.message for r in reports)
