"""Blob garbage collection on a real data dir: what is collected, what is kept, and deleting on a full disk."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hub.api.app import create_app
from hub.blob_gc import BlobCollector
from hub.blobs import EMPTY_JSON_DIGEST
from hub.cli.main import build_parser
from hub.cli.serve import config_from_args
from hub.errors import BadInput, Conflict, InsufficientStorage
from hub.registry import ModelVersion
from hub.serve_config import BlobGcConfig
from hub.services import HubServices
from hub.store.db import RESERVE_FILE
from protos.edgeport.v1 import agent_pb2
from tests.unit.access_support import token_headers
from tests.unit.enrollment import enroll

HOUR = 3600.0


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _age(hub: HubServices, digest: str, seconds: float = 2 * HOUR) -> None:
    """Make a blob look written `seconds` ago."""
    past = time.time() - seconds
    os.utime(hub.blobs.path(digest), (past, past))


def _register(hub: HubServices, name: str, files: dict[str, bytes]) -> ModelVersion:
    entries = [{"path": p, "digest": hub.blobs.put_bytes(b), "size": len(b)} for p, b in files.items()]
    return hub.registry.register(name, entries)


def _age_all(hub: HubServices) -> None:
    for digest in hub.blobs.stored_digests():
        _age(hub, digest)


def test_a_deleted_versions_own_blobs_are_collected_after_the_grace_period_and_shared_ones_kept(
    hub: HubServices, caplog: pytest.LogCaptureFixture
) -> None:
    v1 = _register(hub, "digits", {"model.onnx": b"weights one", "labels.txt": b"shared labels"})
    v2 = _register(hub, "digits", {"model.onnx": b"weights two", "labels.txt": b"shared labels"})
    _age_all(hub)
    collector = BlobCollector(hub.db, hub.blobs, grace_s=HOUR)
    assert collector.collect().collected == 0  # everything is referenced

    hub.registry.delete_version("digits", 1)
    # The delete starts the grace period of the version's blobs, however old their files are.
    report = collector.collect()
    assert report.collected == 0 and report.recent == 2  # v1's own weights and manifest
    assert hub.blobs.exists(_digest(b"weights one")) and hub.blobs.exists(v1.manifest_digest)

    time.sleep(0.3)
    with caplog.at_level(logging.INFO, logger="hub.blob_gc"):
        report = collector.collect(grace_s=0.2)
    assert report.collected == 2 and report.reclaimed_bytes == len(b"weights one") + hub_size(v1.manifest_digest, v1)
    assert not hub.blobs.exists(_digest(b"weights one")) and not hub.blobs.exists(v1.manifest_digest)
    for kept in (_digest(b"shared labels"), _digest(b"weights two"), v2.manifest_digest, EMPTY_JSON_DIGEST):
        assert hub.blobs.is_intact(kept)
    assert any("reclaimed 2 blob(s)" in r.getMessage() and f"{report.reclaimed_bytes} bytes" in r.getMessage()
               for r in caplog.records)
    # v2 still pulls whole: its files and manifest are served as before
    assert hub.artifacts.manifest("models/digits", "2")[1] == v2.manifest_digest
    assert b"".join(hub.blobs.open_verified(_digest(b"shared labels"))) == b"shared labels"


def hub_size(digest: str, version: ModelVersion) -> int:
    """The size of a version's manifest blob (it is the canonical manifest JSON)."""
    from hub.registry import build_manifest

    return len(build_manifest(version.name, version.version, version.files, version.created_at))


def test_a_half_finished_registrations_orphans_are_collected_and_fresh_uploads_kept(hub: HubServices) -> None:
    # A folder registration that stopped half-way (disk full): two blobs uploaded, no version registered.
    orphans = [hub.blobs.put_bytes(b"first file"), hub.blobs.put_bytes(b"second file")]
    for digest in orphans:
        _age(hub, digest)
    in_flight = hub.blobs.put_bytes(b"just uploaded, about to be registered")
    # a temp file of an upload in progress is not a blob: never touched
    temp = hub.blobs.dir / ".tmp-0123456789ab-upload"
    temp.write_bytes(b"partial")
    os.utime(temp, (time.time() - 2 * HOUR,) * 2)

    report = BlobCollector(hub.db, hub.blobs, grace_s=HOUR).collect()
    assert report.collected == 2 and report.reclaimed_bytes == len(b"first file") + len(b"second file")
    assert not any(hub.blobs.exists(d) for d in orphans)
    assert hub.blobs.exists(in_flight) and temp.exists()
    # the upload in flight registers fine afterwards
    hub.registry.register("late", [{"path": "f", "digest": in_flight, "size": 37}])


def test_a_blob_a_client_found_stored_is_spared_until_its_registration(hub: HubServices) -> None:
    old = hub.blobs.put_bytes(b"uploaded long ago, never registered")
    _age(hub, old)
    client = TestClient(create_app(hub), headers=token_headers(hub))
    assert client.head(f"/api/v1/blobs/{old}").status_code == 200  # the client will not upload it again
    assert BlobCollector(hub.db, hub.blobs, grace_s=HOUR).collect().collected == 0
    assert client.post("/api/v1/models", json={
        "name": "reused", "files": [{"path": "a", "digest": old, "size": 35}]}).status_code == 201


def test_blobs_a_live_deployment_needs_are_kept(hub: HubServices, tmp_path: Path) -> None:
    enroll(hub, "dev-1", ["zone=a"])
    model = _register(hub, "digits", {"model.onnx": b"onnx bytes"})
    source_v1, source_v2 = hub.blobs.put_bytes(b"def run(x): return 1"), hub.blobs.put_bytes(b"def run(x): return 2")

    def inference(digest: str) -> dict[str, object]:
        return {"entry_script": "score.py", "source_files": [{"path": "score.py", "digest": digest, "size": 20}]}

    hub.deployments.create({"name": "svc", "models": [model.id], "target": "zone=a", "inference": inference(source_v1)})
    hub.deployments.record_status("dev-1", agent_pb2.DeploymentStatus(
        service="svc", generation=1, phase=agent_pb2.HEALTHY, serving_generation=1))
    hub.deployments.update("svc", {"inference": inference(source_v2)})  # generation 2, not healthy yet
    hub.deployments.record_status("dev-1", agent_pb2.DeploymentStatus(
        service="svc", generation=2, phase=agent_pb2.FAILED, serving_generation=1))
    _age_all(hub)
    collector = BlobCollector(hub.db, hub.blobs, grace_s=0)
    report = collector.collect()
    assert report.collected == 0
    # generation 2's source (desired), generation 1's source (the device's last-good) and the model
    assert all(hub.blobs.exists(d) for d in (source_v1, source_v2, *(f.digest for f in model.files)))
    with pytest.raises(Conflict):
        hub.registry.delete_version("digits", 1)

    # Once the device serves generation 2, generation 1's source is no longer needed by anyone.
    hub.deployments.record_status("dev-1", agent_pb2.DeploymentStatus(
        service="svc", generation=2, phase=agent_pb2.HEALTHY, serving_generation=2))
    assert collector.collect().collected == 1
    assert not hub.blobs.exists(source_v1) and hub.blobs.exists(source_v2)
    hub.deployments.delete("svc")
    hub.registry.delete_version("digits", 1)
    time.sleep(0.05)
    collector.collect(grace_s=0.01)
    assert sorted(hub.blobs.stored_digests()) == [EMPTY_JSON_DIGEST]


def test_the_rest_route_runs_one_collection_and_checks_its_body(hub: HubServices) -> None:
    orphan = hub.blobs.put_bytes(b"orphan")
    _age(hub, orphan)
    client = TestClient(create_app(hub), headers=token_headers(hub))
    hub.blob_collector.grace_s = HOUR
    answer = client.post("/api/v1/blobs/gc")
    assert answer.status_code == 200 and answer.json()["collected"] == 1 and answer.json()["reclaimed_bytes"] == 6
    assert answer.json()["grace_s"] == HOUR
    for bad in ({"grace_s": -1}, {"grace_s": "soon"}, {"grace": 1}, {"grace_s": 1e300}):
        refused = client.post("/api/v1/blobs/gc", json=bad)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "bad_input", bad


def test_serve_options_set_the_collector(tmp_path: Path) -> None:
    def config(*options: str) -> BlobGcConfig:
        return config_from_args(build_parser().parse_args(["serve", "--data-dir", str(tmp_path), *options])).blob_gc

    assert config() == BlobGcConfig(grace_s=3600, interval_s=600)
    assert config("--blob-grace", "30m", "--blob-gc-interval", "0") == BlobGcConfig(grace_s=1800, interval_s=0)
    for option, bad in (("--blob-grace", "-1"), ("--blob-grace", "1y"), ("--blob-gc-interval", "soon")):
        with pytest.raises(BadInput, match=option):
            config(option, bad)
    hub = HubServices.open(tmp_path, blob_gc=BlobGcConfig(grace_s=5, interval_s=0))
    try:
        assert (hub.blob_collector.grace_s, hub.blob_collector.interval_s) == (5, 0)
    finally:
        hub.close()


# ---- a full disk ----


@contextlib.contextmanager
def _small_filesystem(where: Path, size_mb: int) -> Iterator[Path]:
    where.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a small tmpfs here: {exc}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def _fill(directory: Path) -> Path:
    """Write a file until the filesystem has no byte left; return it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1024 * 1024, 4096, 1):  # big writes first, then the last partial blocks
            chunk = b"\xff" * size
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, chunk)
    finally:
        os.close(fd)
    return filler


def test_on_a_full_disk_delete_and_collection_succeed_and_the_reserve_comes_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _small_filesystem(tmp_path / "small", 48) as disk:
        hub = HubServices.open(disk / "hub")
        try:
            assert (disk / "hub" / RESERVE_FILE).stat().st_size > 0
            admin = token_headers(hub)  # while there is room for it
            for n in range(3):  # a few models with ~2 MB each
                _register(hub, f"m{n}", {f"part{i}": os.urandom(512 * 1024) for i in range(4)})
            _age_all(hub)
            filler = _fill(disk)
            with pytest.raises(InsufficientStorage):  # the disk really is full
                _register(hub, "more", {"x": os.urandom(1024 * 1024)})
            # More rows make the database grow: a registration cannot go in, but a delete must.
            with caplog.at_level(logging.INFO):
                client = TestClient(create_app(hub), headers=admin)
                deleted = client.delete("/api/v1/models/m0/versions/1")  # `hub model delete`
                assert deleted.status_code == 200, deleted.text
                for n in range(1, 3):
                    hub.registry.delete_version(f"m{n}", 1)
                # The delete that needed the reserve leaves its blobs to the next run, grace or not; the
                # later ones (room again) start the grace period as usual.
                first = hub.blob_collector.collect(grace_s=HOUR)
                time.sleep(0.05)
                report = hub.blob_collector.collect(grace_s=0.01)
            assert first.collected == 5 and first.reclaimed_bytes >= 4 * 512 * 1024
            assert report.collected == 2 * 5 and report.reclaimed_bytes >= 2 * 4 * 512 * 1024
            assert any("released the" in r.getMessage() for r in caplog.records)
            assert hub.db.reserve.held  # re-created from the reclaimed space
            filler.unlink()
            assert _register(hub, "after", {"x": b"room again"}).version == 1
        finally:
            hub.close()


def test_the_component_collects_every_interval_and_stops_cleanly(hub: HubServices) -> None:
    orphan = hub.blobs.put_bytes(b"left behind")
    _age(hub, orphan)

    async def scenario() -> None:
        collector = BlobCollector(hub.db, hub.blobs, grace_s=HOUR, interval_s=0.05)
        await collector.start()
        try:
            for _ in range(100):
                if not hub.blobs.exists(orphan):
                    break
                await asyncio.sleep(0.05)
        finally:
            await collector.stop()
        assert not hub.blobs.exists(orphan)
        late = hub.blobs.put_bytes(b"after stop")
        _age(hub, late)
        await asyncio.sleep(0.2)
        assert hub.blobs.exists(late)  # stopped means no more runs

    asyncio.run(scenario())
    off = BlobCollector(hub.db, hub.blobs, interval_s=0)

    async def disabled() -> None:
        await off.start()
        await off.stop()

    asyncio.run(disabled())


def test_a_claim_on_a_blob_that_is_not_stored_is_not_remembered(hub: HubServices) -> None:
    absent = _digest(b"never uploaded")
    assert not hub.blobs.claim(absent)
    stored = hub.blobs.put_bytes(b"never uploaded")
    _age(hub, stored)
    assert BlobCollector(hub.db, hub.blobs, grace_s=HOUR).collect().collected == 1
