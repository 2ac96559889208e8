"""Client-side file handling of `hub model register/download`: what is collected, what is refused."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from hub.client import HubClient, collect_files, safe_target
from hub.errors import BadInput, StorageError


def test_single_file_and_nested_folder(tmp_path: Path) -> None:
    (tmp_path / "m" / "sub" / "deep").mkdir(parents=True)
    (tmp_path / "m" / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "m" / "sub" / "deep" / "w.bin").write_bytes(b"w" * 3000)
    single = collect_files(tmp_path / "m" / "model.onnx")
    assert [(f.path, f.size, f.digest) for f in single] == [
        ("model.onnx", 4, "sha256:" + hashlib.sha256(b"onnx").hexdigest())
    ]
    assert [f.path for f in collect_files(tmp_path / "m")] == ["model.onnx", "sub/deep/w.bin"]


def test_symlinked_folders_are_followed_and_loops_refused(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "vocab.txt").write_text("v")
    (tmp_path / "m" / "a.txt").write_text("a")
    os.symlink(tmp_path / "shared", tmp_path / "m" / "linked")
    assert [f.path for f in collect_files(tmp_path / "m")] == ["a.txt", "linked/vocab.txt"]
    os.symlink(tmp_path / "m", tmp_path / "m" / "loop")
    with pytest.raises(BadInput, match="loop"):
        collect_files(tmp_path / "m")


def test_missing_empty_and_special(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        collect_files(tmp_path / "nope")
    (tmp_path / "empty" / "only-folders").mkdir(parents=True)
    with pytest.raises(BadInput, match="contains no files"):
        collect_files(tmp_path / "empty")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(BadInput, match="not a regular file"):
        collect_files(tmp_path / "fifo")


@pytest.mark.parametrize("rel", ["../escape", "/abs", "a/../../b", ""])
def test_download_paths_never_escape_the_target(tmp_path: Path, rel: str) -> None:
    with pytest.raises(StorageError, match="unsafe file path"):
        safe_target(tmp_path, rel)
    assert safe_target(tmp_path, "a/b.txt") == tmp_path / "a" / "b.txt"


@pytest.mark.parametrize("url", ["127.0.0.1:7070", "ftp://x", ""])
def test_bad_hub_urls(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPORT_HUB", url or "nonsense")
    with pytest.raises(BadInput, match="bad hub URL"):
        HubClient(url or None)
