"""Empty, one-byte and repeated files through a real `hub serve`: register, download, pull over OCI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import oras.client

from tests.integration.registry_support import auth, hub_cli, start_hub
from tests.support import Processes

EMPTY_SHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_empty_one_byte_and_repeated_files_register_download_and_pull(processes: Processes, tmp_path: Path) -> None:
    hub = start_hub(processes, tmp_path / "data")
    folder = tmp_path / "tiny"
    (folder / "same").mkdir(parents=True)
    (folder / "empty.bin").write_bytes(b"")
    (folder / "one.bin").write_bytes(b"\x00")
    for i in range(40):  # many files, one content: one blob
        (folder / "same" / f"copy-{i:02}.txt").write_bytes(b"identical\n")
    result = hub_cli(hub.url, "model", "register", "-n", "tiny", "-p", str(folder), "-o", "json")
    assert result.code == 0, result.err
    files = {f["path"]: f for f in result.json()["files"]}
    assert len(files) == 42
    assert files["empty.bin"]["digest"] == EMPTY_SHA256 and files["empty.bin"]["size"] == 0
    assert files["one.bin"]["size"] == 1
    assert len({f["digest"] for p, f in files.items() if p.startswith("same/")}) == 1

    with httpx.Client(base_url=hub.url, headers=auth(hub.url), timeout=10) as http:
        assert http.head(f"/api/v1/blobs/{EMPTY_SHA256}").status_code == 200
        # the same empty blob uploaded again: already stored, nothing changes
        again = http.put(f"/api/v1/blobs/{EMPTY_SHA256}", content=b"")
        assert again.status_code == 201 and again.json() == {"digest": EMPTY_SHA256, "size": 0, "created": False}
        for path, entry in files.items():
            url = f"/v2/models/tiny/blobs/{entry['digest']}"
            got = http.get(url)
            assert got.status_code == 200 and got.content == (folder / path).read_bytes(), path
            assert got.headers["content-length"] == str(entry["size"])
            head = http.head(url)
            assert head.status_code == 200 and head.headers["content-length"] == str(entry["size"])
        one = f"/v2/models/tiny/blobs/{files['one.bin']['digest']}"
        ranged = http.get(one, headers={"Range": "bytes=0-0"})
        assert ranged.status_code == 206 and ranged.content == b"\x00"
        assert ranged.headers["content-range"] == "bytes 0-0/1"
        assert http.get(one, headers={"Range": "bytes=1-"}).status_code == 416
        # no byte of an empty blob can be asked for: 416 with its size, not an error of the hub
        empty_range = http.get(f"/v2/models/tiny/blobs/{EMPTY_SHA256}", headers={"Range": "bytes=0-"})
        assert empty_range.status_code == 416 and empty_range.headers["content-range"] == "bytes */0"
        manifest = http.get("/v2/models/tiny/manifests/1").json()
        layers = {layer["annotations"]["org.opencontainers.image.title"]: layer for layer in manifest["layers"]}
        assert layers["empty.bin"]["size"] == 0 and layers["empty.bin"]["digest"] == EMPTY_SHA256

    oras_client = oras.client.OrasClient(insecure=True, auth_backend="basic")
    oras_client.auth.set_basic_auth("any-user", hub.token)  # an API token as the registry password
    pulled = oras_client.pull(target=f"127.0.0.1:{hub.port}/models/tiny:1", outdir=str(tmp_path / "pulled"))
    assert len(pulled) == 42
    for path in files:
        data = (tmp_path / "pulled" / path).read_bytes()
        assert data == (folder / path).read_bytes(), path
        assert "sha256:" + hashlib.sha256(data).hexdigest() == files[path]["digest"]

    shown = hub_cli(hub.url, "model", "show", "tiny:1", "-o", "json")
    assert shown.code == 0 and len(shown.json()["files"]) == 42
