"""RegistryService on a real SQLite database and blob store: versions, labels, filters, all-or-nothing, in-use."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hub.blobs import BlobStore
from hub.errors import BadInput, Conflict, NotFound, StorageError
from hub.names import parse_label, parse_model_ref, validate_labels, validate_name
from hub.registry import ModelFile, RegistryService, validate_file_path
from hub.store import Database, DataDirLocked, open_database


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryService]:
    db = open_database(tmp_path)
    try:
        yield RegistryService(db, BlobStore(tmp_path))
    finally:
        db.close()


def stored(registry: RegistryService, path: str, data: bytes) -> ModelFile:
    digest = registry.blobs.put_bytes(data)
    return ModelFile(path, digest, len(data))


def snapshot(registry: RegistryService) -> list[dict[str, object]]:
    return [v.to_json() for v in registry.list_versions()]


# --- names and labels ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["digits", "a", "A.b_c-9", "x" * 255])
def test_good_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 256, "a b", "a/b", "a:b", "ü", "name\n", None, 5])
def test_bad_names(name: object) -> None:
    with pytest.raises(BadInput, match="bad model name"):
        validate_name(name)


def test_labels() -> None:
    assert parse_label("team=vision") == ("team", "vision")
    assert parse_label("expr=a=b") == ("expr", "a=b")
    assert parse_label("empty=") == ("empty", "")
    for bad in ("novalue", "=v", "sp ace=v", "k=line\nbreak"):
        with pytest.raises(BadInput):
            parse_label(bad)
    with pytest.raises(BadInput, match="must be an object"):
        validate_labels(["a"])
    with pytest.raises(BadInput, match="bad property value"):
        validate_labels({"k": 1}, "property")


@pytest.mark.parametrize("path", ["../x", "/abs", "a//b", "a/./b", "a\\b", "", "a/..", "x\x00y"])
def test_bad_file_paths(path: str) -> None:
    with pytest.raises(BadInput, match="bad file path"):
        validate_file_path(path)


def test_model_refs() -> None:
    assert parse_model_ref("digits") == ("digits", None)
    assert parse_model_ref("digits:12") == ("digits", 12)
    for bad in ("digits:0", "digits:x", "digits:", "bad name:1", ":1"):
        with pytest.raises(BadInput):
            parse_model_ref(bad)


# --- the registry ----------------------------------------------------------------------------------


def test_versions_count_up_and_are_never_reused(registry: RegistryService) -> None:
    f = stored(registry, "model.onnx", b"weights")
    assert [registry.register("m", [f]).version for _ in range(3)] == [1, 2, 3]
    registry.delete_version("m", 3)
    assert registry.register("m", [f]).version == 4
    assert registry.register("other", [f]).version == 1
    assert registry.get_version("m").version == 4
    assert registry.get_version("m").id == "m:4"


def test_register_records_everything(registry: RegistryService) -> None:
    files = [stored(registry, "b/weights.bin", b"w" * 100), stored(registry, "a.json", b"{}x")]
    v = registry.register(
        "m", files, tags={"team": "vision"}, properties={"acc": "0.9"}, description="d", framework="onnx"
    )
    got = registry.get_version("m", 1)
    assert [f.path for f in got.files] == ["a.json", "b/weights.bin"]
    assert got.tags == {"team": "vision"} and got.properties == {"acc": "0.9"}
    assert (got.description, got.framework, got.size) == ("d", "onnx", 103)
    assert got.repository == "models/m" and got.reference == "1"
    body, digest = registry.manifest("models/m", "1") or (b"", "")
    assert digest == v.manifest_digest and registry.blobs.exists(digest)
    manifest = json.loads(body)
    assert [layer["annotations"]["org.opencontainers.image.title"] for layer in manifest["layers"]] == [
        "a.json",
        "b/weights.bin",
    ]
    assert registry.manifest("models/m", digest) == (body, digest)
    assert registry.manifest("models/m", "latest") == (body, digest)
    assert registry.manifest("models/m", "2") is None
    assert registry.manifest("models/nope", "1") is None


def test_identical_content_is_one_blob(registry: RegistryService) -> None:
    a = stored(registry, "x.bin", b"same")
    b = stored(registry, "y.bin", b"same")
    assert a.digest == b.digest
    registry.register("m", [a, b])
    assert len([p for p in registry.blobs.dir.iterdir() if p.name == a.digest[7:]]) == 1


def test_list_filters(registry: RegistryService) -> None:
    f = stored(registry, "m.onnx", b"1")
    registry.register("a", [f], tags={"team": "vision", "stage": "dev"})
    registry.register("a", [f], tags={"team": "vision", "stage": "prod"})
    registry.register("b", [f], tags={"team": "audio"})
    ids = lambda vs: [v.id for v in vs]  # noqa: E731
    assert ids(registry.list_versions()) == ["a:2", "a:1", "b:1"]
    assert ids(registry.list_versions("a")) == ["a:2", "a:1"]
    assert ids(registry.list_versions(tags={"team": "vision", "stage": "dev"})) == ["a:1"]
    assert ids(registry.list_versions(tags={"stage": None})) == ["a:2", "a:1"]
    assert ids(registry.list_versions(tags={"team": "none"})) == []
    assert ids(registry.list_versions(latest_only=True)) == ["a:2", "b:1"]
    with pytest.raises(BadInput):
        registry.list_versions("bad name")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([], "at least one file"),
        ([ModelFile("m.onnx", "sha256:" + "0" * 64, 3)], "has not been uploaded"),
        ([ModelFile("m.onnx", "{d}", 999)], "announced 999 bytes"),
        ([ModelFile("m.onnx", "{d}", 3), ModelFile("m.onnx", "{d}", 3)], "listed twice"),
        ([ModelFile("a", "{d}", 3), ModelFile("a/b", "{d}", 3)], "clashes with folder"),
        ([ModelFile("../m", "{d}", 3)], "must be relative"),
        ([ModelFile("m", "sha1:abc", 3)], "bad digest"),
        ([ModelFile("m", "{d}", -1)], "bad size"),
    ],
)
def test_register_refuses_bad_files_and_changes_nothing(
    registry: RegistryService, files: list[ModelFile], message: str
) -> None:
    good = stored(registry, "m.onnx", b"abc")
    registry.register("m", [good])
    before = snapshot(registry)
    files = [ModelFile(f.path, f.digest.replace("{d}", good.digest), f.size) for f in files]
    with pytest.raises(BadInput, match=message):
        registry.register("m", files)
    assert snapshot(registry) == before
    assert registry.register("m", [good]).version == 2  # no number was burnt by the failure


def test_register_refuses_bad_labels(registry: RegistryService) -> None:
    f = stored(registry, "m.onnx", b"abc")
    with pytest.raises(BadInput, match="bad tag key"):
        registry.register("m", [f], tags={"bad key": "v"})
    with pytest.raises(BadInput, match="bad model name"):
        registry.register("bad/name", [f])
    assert snapshot(registry) == []


def test_not_found_messages(registry: RegistryService) -> None:
    with pytest.raises(NotFound, match="model 'nope' not found"):
        registry.get_version("nope")
    registry.register("m", [stored(registry, "m.onnx", b"abc")])
    with pytest.raises(NotFound, match="model 'm' has no version 7"):
        registry.get_version("m", 7)
    with pytest.raises(NotFound, match="has no version 7"):
        registry.delete_version("m", 7)


def test_in_use_checks_refuse_delete(registry: RegistryService) -> None:
    registry.register("m", [stored(registry, "m.onnx", b"abc")])

    def used_by_service(name: str, version: int) -> None:
        if (name, version) == ("m", 1):
            raise Conflict("model m:1 is used by service 'scorer'; delete or update the service first")

    registry.in_use_checks.append(used_by_service)
    before = snapshot(registry)
    with pytest.raises(Conflict, match="used by service 'scorer'"):
        registry.delete_version("m", 1)
    assert snapshot(registry) == before
    registry.in_use_checks.clear()
    registry.delete_version("m", 1)
    assert snapshot(registry) == []
    assert registry.knows_repository("models/m")  # the name stays known (versions never reused)
    with pytest.raises(NotFound, match="has no versions left"):
        registry.get_version("m")


def test_second_database_on_same_dir_is_refused(tmp_path: Path) -> None:
    db = open_database(tmp_path)
    try:
        with pytest.raises(DataDirLocked, match="in use by another hub process"):
            Database(tmp_path)
    finally:
        db.close()
    Database(tmp_path).close()  # released on close


def test_unusable_data_dirs_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInput, match="cannot use data dir"):
        Database(tmp_path / "file")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "hub.db").write_bytes(b"not a database " * 100)
    with pytest.raises(StorageError, match="not a usable hub database"):
        Database(damaged)
    (damaged / "hub.db").unlink()
    Database(damaged).close()  # the lock was released by the failed open
    (tmp_path / "blobs-is-a-file" / "blobs").parent.mkdir()
    (tmp_path / "blobs-is-a-file" / "blobs").write_text("x")
    with pytest.raises(StorageError, match="cannot use blob folder"):
        BlobStore(tmp_path / "blobs-is-a-file")


def test_concurrent_registers_get_distinct_versions(registry: RegistryService) -> None:
    f = stored(registry, "m.onnx", b"abc")
    with ThreadPoolExecutor(max_workers=8) as pool:
        versions = list(pool.map(lambda _: registry.register("busy", [f]).version, range(40)))
    assert sorted(versions) == list(range(1, 41))
