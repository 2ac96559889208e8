"""The deployment source snapshot: ignore files, stable copies, warnings (hub.sourcedir)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hub.errors import BadInput
from hub.sourcedir import LARGE_SOURCE_BYTES, SourceChanged, snapshot_source


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _paths(root: Path) -> list[str]:
    with snapshot_source(root) as snap:
        return [f.path for f in snap.files]


def test_amlignore_leaves_out_files_and_folders(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src", {
        ".amlignore": "data/\n*.log\n!keep.log\nsecrets/*.key\n",
        "score.py": "def init(): pass\n",
        "util/helpers.py": "x = 1\n",
        "data/big.bin": "0" * 100,
        "data/nested/more.bin": "1",
        "run.log": "growing",
        "keep.log": "kept on purpose",
        "secrets/server.key": "KEY",
        "__pycache__/score.cpython-311.pyc": "",
        ".git/HEAD": "ref: refs/heads/main\n",
    })
    with snapshot_source(root) as snap:
        paths = [f.path for f in snap.files]
        assert paths == [".amlignore", "keep.log", "score.py", "util/helpers.py"]
        assert snap.ignore_files == [".amlignore"]
        assert snap.ignored == 3  # data/, run.log, secrets/server.key
        assert "uploading 4 files" in snap.summary() and "3 left out by .amlignore" in snap.summary()
        # the copies hold the same bytes the digests name
        score = next(f for f in snap.files if f.path == "score.py")
        assert score.copy.read_text() == "def init(): pass\n" and score.size == len("def init(): pass\n")
        copies_dir = score.copy.parent
    assert not copies_dir.exists(), "the snapshot's copies outlive the block"


def test_gitignore_is_used_when_there_is_no_amlignore(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src", {".gitignore": "*.onnx\nlogs/\n", "score.py": "", "model.onnx": "m",
                                    "logs/a.txt": "a"})
    assert _paths(root) == [".gitignore", "score.py"]


def test_amlignore_wins_over_gitignore(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src", {".amlignore": "*.csv\n", ".gitignore": "*.py\n", "score.py": "", "d.csv": ""})
    assert _paths(root) == [".amlignore", ".gitignore", "score.py"]


def test_ignore_file_in_a_subfolder_applies_below_it_and_wins(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src", {
        ".gitignore": "*.txt\n",
        "score.py": "",
        "a.txt": "",
        "pkg/.gitignore": "!notes.txt\ncache/\n",
        "pkg/notes.txt": "",
        "pkg/other.txt": "",
        "pkg/cache/x.py": "",
        "cache/y.py": "",
    })
    assert _paths(root) == [".gitignore", "cache/y.py", "pkg/.gitignore", "pkg/notes.txt", "score.py"]


def test_key_like_files_and_a_large_folder_are_warned_about(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src", {"score.py": "", "tls/server.pem": "", "deploy.key": "", "id_ed25519": "",
                                    "id_ed25519.pub": ""})
    with snapshot_source(root) as snap:
        assert snap.key_like() == ["deploy.key", "id_ed25519", "tls/server.pem"]
        (warning,) = snap.warnings()
        assert "deploy.key, id_ed25519, tls/server.pem" in warning and ".amlignore" in warning
    with open(root / "data.bin", "wb") as fh:  # sparse: cheap to write, read as zeros
        fh.truncate(LARGE_SOURCE_BYTES + 1)
    with snapshot_source(root) as snap:
        large = [w for w in snap.warnings() if "source folder" in w]
        assert len(large) == 1 and "50.0 MB" in large[0] and "data.bin" in large[0], snap.warnings()
    (root / "data.bin").unlink()
    for name in ("tls/server.pem", "deploy.key", "id_ed25519"):
        (root / name).unlink()
    with snapshot_source(root) as snap:
        assert snap.warnings() == []


@contextmanager
def _growing(path: Path) -> Iterator[None]:
    """Append to `path` from another thread for as long as the block runs (a log being written)."""
    stop = threading.Event()

    def append() -> None:
        with open(path, "ab") as fh:
            while not stop.is_set():
                fh.write(b"x" * 4096)
                fh.flush()
                stop.wait(0.0005)

    thread = threading.Thread(target=append, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def test_a_file_that_grows_while_read_is_an_error_naming_it(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src", {"score.py": ""})
    log = root / "train.log"
    log.write_bytes(b"y" * (32 * 1024 * 1024))
    with _growing(log), pytest.raises(SourceChanged) as err, snapshot_source(root):
        pass
    assert str(log) in err.value.message and "changed while it was read" in err.value.message
    assert err.value.exit_code == 1


def test_too_many_files_and_unreadable_things_are_bad_input(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src", {f"f{i}.py": "" for i in range(5)})
    with pytest.raises(BadInput, match="has 5 files to upload; the limit is 4"), snapshot_source(root, max_files=4):
        pass
    os.symlink(root / "missing.py", root / "dangling.py")
    with pytest.raises(BadInput, match=r"dangling\.py: broken symbolic link"), snapshot_source(root):
        pass
    (root / "dangling.py").unlink()
    os.symlink(root, root / "loop")
    with pytest.raises(BadInput, match="links back into it"), snapshot_source(root):
        pass
