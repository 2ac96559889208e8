"""Blob collection in a real `hub serve`: `hub model delete`, then one collection run over the REST API."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

from tests.integration.registry_support import auth, hub_cli, start_hub
from tests.support import Processes


def test_deleting_a_version_and_collecting_reclaims_its_own_blobs_only(processes: Processes, tmp_path: Path) -> None:
    hub = start_hub(processes, tmp_path / "data")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "labels.txt").write_text("shared by both versions\n")
    (folder / "weights.bin").write_bytes(os.urandom(200_000))
    first = hub_cli(hub.url, "model", "register", "-n", "m", "-p", str(folder), "-o", "json").json()
    (folder / "weights.bin").write_bytes(os.urandom(100_000))
    second = hub_cli(hub.url, "model", "register", "-n", "m", "-p", str(folder), "-o", "json").json()
    blob_dir = hub.data_dir / "blobs" / "sha256"

    def stored(digest: str) -> bool:
        return (blob_dir / digest.split(":", 1)[1]).is_file()

    deleted = hub_cli(hub.url, "model", "delete", "m:1")
    assert deleted.code == 0, deleted.err
    with httpx.Client(base_url=hub.url, headers=auth(hub.url), timeout=30) as http:
        kept = http.post("/api/v1/blobs/gc").json()  # the hub's grace period (1 h): nothing goes yet
        assert kept["collected"] == 0 and kept["recent"] == 2
        time.sleep(0.2)
        report = http.post("/api/v1/blobs/gc", json={"grace_s": 0.1}).json()
    assert report["collected"] == 2 and report["reclaimed_bytes"] > 200_000  # v1's weights and manifest
    weights_v1 = next(f["digest"] for f in first["files"] if f["path"] == "weights.bin")
    assert not stored(weights_v1) and not stored(first["manifest_digest"])
    assert all(stored(f["digest"]) for f in second["files"]) and stored(second["manifest_digest"])
    assert f"reclaimed 2 blob(s), {report['reclaimed_bytes']} bytes" in hub.log()
    # version 2 still downloads whole, shared file included
    pulled = hub_cli(hub.url, "model", "download", "m:2", "--target-dir", str(tmp_path / "out"))
    assert pulled.code == 0, pulled.err
    assert (tmp_path / "out" / "labels.txt").read_text() == "shared by both versions\n"
    assert (tmp_path / "out" / "weights.bin").read_bytes() == (folder / "weights.bin").read_bytes()
