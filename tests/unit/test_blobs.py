"""BlobStore: content addressing, atomic verified writes, verification on read, disk full, byte ranges."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.artifacts import RangeNotSatisfiable, parse_range
from hub.blobs import EMPTY_JSON_DIGEST, BlobStore, CorruptBlob
from hub.errors import BadInput, InsufficientStorage, NotFound


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path)


def temp_files(store: BlobStore) -> list[Path]:
    return list(store.dir.glob(".tmp-*"))


def test_layout_and_roundtrip(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # several chunks
    src = tmp_path / "f.bin"
    src.write_bytes(data)
    digest = store.put_file(src)
    assert digest == digest_of(data)
    assert store.path(digest) == tmp_path / "blobs" / "sha256" / digest[7:]
    assert store.exists(digest) and store.size(digest) == len(data)
    assert b"".join(store.open_verified(digest)) == data
    assert b"".join(store.open_verified(digest, 10, 19)) == data[10:20]
    assert store.exists(EMPTY_JSON_DIGEST)  # the OCI empty config is always there
    assert store.put_file(src) == digest  # idempotent


def test_digest_mismatch_leaves_nothing(store: BlobStore) -> None:
    writer = store.writer(digest_of(b"expected"))
    writer.write(b"something else")
    with pytest.raises(BadInput, match="uploaded content has digest"):
        writer.commit()
    assert not store.exists(digest_of(b"expected")) and not temp_files(store)


def test_size_mismatch_and_oversize_body(store: BlobStore) -> None:
    data = b"0123456789"
    writer = store.writer(digest_of(data), expected_size=11)
    writer.write(data)
    with pytest.raises(BadInput, match="announced 11"):
        writer.commit()
    writer = store.writer(digest_of(data), expected_size=5)
    with pytest.raises(BadInput, match="larger than the announced 5"):
        writer.write(data)
    assert not temp_files(store)


@pytest.mark.parametrize(
    "digest",
    ["", "sha256:abc", "md5:" + "0" * 64, "sha256:" + "A" * 64, "../../etc/passwd", "sha256:" + "0" * 64 + "\n"],
)
def test_bad_digests_are_refused(store: BlobStore, digest: str) -> None:
    with pytest.raises(BadInput, match="bad digest"):
        store.path(digest)


def test_corruption_is_detected_even_after_a_good_read(store: BlobStore, caplog: pytest.LogCaptureFixture) -> None:
    data = os.urandom(100_000)
    digest = store.put_bytes(data)
    assert store.verify(digest) == len(data)
    path = store.path(digest)
    time.sleep(0.05)  # past the kernel's coarse timestamp granularity, so the rewrite gets a new mtime
    flipped = bytearray(data)
    flipped[500] ^= 1
    path.write_bytes(bytes(flipped))  # same size, new mtime
    with caplog.at_level(logging.ERROR, logger="hub.blobs"), pytest.raises(CorruptBlob, match="corrupt on disk"):
        store.verify(digest)
    assert f"corrupt blob {digest}" in caplog.text
    with open(path, "r+b") as fh:
        fh.truncate(10)
    with pytest.raises(CorruptBlob):
        list(store.open_verified(digest))
    path.unlink()
    with pytest.raises(NotFound, match="not stored"):
        store.verify(digest)


def test_stale_temp_files_are_removed_on_open(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    writer = store.writer(digest_of(b"x"))
    writer.write(b"x")  # a crash here leaves the temp file
    assert temp_files(store)
    BlobStore(tmp_path)
    assert not temp_files(store)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs (needs mount privilege, which root has here)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("no privilege to mount a tmpfs; the integration test covers disk full with prlimit")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_raises_insufficient_storage_and_cleans_up(small_disk: Path) -> None:
    store = BlobStore(small_disk)
    data = os.urandom(2 * 1024 * 1024)
    writer = store.writer(digest_of(data), len(data))
    with pytest.raises(InsufficientStorage, match="disk full"):
        for i in range(0, len(data), 65536):
            writer.write(data[i : i + 65536])
        writer.commit()
    assert not temp_files(store) and not store.exists(digest_of(data))
    assert store.put_bytes(b"small") == digest_of(b"small")  # space came back


@pytest.mark.parametrize(
    ("header", "expected"),
    [("bytes=0-0", (0, 0)), ("bytes=5-", (5, 99)), ("bytes=-10", (90, 99)), ("bytes=90-500", (90, 99)),
     ("bytes=-500", (0, 99)), (" bytes = 1-2 ", (1, 2))],
)  # fmt: skip
def test_parse_range(header: str, expected: tuple[int, int]) -> None:
    r = parse_range(header, 100)
    assert (r.start, r.end, r.length) == (*expected, expected[1] - expected[0] + 1)


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=5-1", "bytes=0-1,3-4", "lines=1-2", "bytes=x-", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 100)
