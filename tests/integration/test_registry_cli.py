"""The `hub` CLI as a subprocess against a real `hub serve`: the registry workflow and every bad input."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.client import HubClient
from tests.integration.registry_support import (
    CliResult,
    RunningHub,
    assert_one_line_error,
    hub_cli,
    registry_snapshot,
    start_hub,
)
from tests.support import PYTHON, REPO, Processes, free_port


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """One hub for the module (each test uses its own model names)."""
    root = tmp_path_factory.mktemp("hub")
    processes = Processes(root)
    try:
        yield start_hub(processes, root / "data")
    finally:
        processes.stop_all()


@pytest.fixture(scope="module")
def known_model(hub: RunningHub, digits_model: Path) -> str:
    """`known:1`, registered once for the bad-input cases."""
    _register(hub, "known", digits_model)
    return "known:1"


def _register(hub: RunningHub, name: str, path: Path) -> dict[str, Any]:
    """Set-up registrations go through the same HubClient in-process (the CLI itself is tested elsewhere)."""
    with HubClient(hub.url, token=hub.token) as client:
        return client.register_model(name, path)


def _blob_files(data_dir: Path) -> set[str]:
    return {p.name for p in (data_dir / "blobs" / "sha256").iterdir()}


def test_register_list_show_download_delete(hub: RunningHub, digits_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bundle"
    (folder / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(digits_model, folder / "model.onnx")
    (folder / "nested" / "labels.txt").write_text("0\n1\n2\n")
    (folder / "nested" / "deeper" / "config.json").write_text('{"k": 1}')

    first = hub_cli(hub.url, "model", "register", "-n", "digits-cli", "-p", str(digits_model), "--output", "json")
    assert first.code == 0, first.err
    assert {k: first.json()[k] for k in ("name", "version", "id")} == {
        "name": "digits-cli",
        "version": 1,
        "id": "digits-cli:1",
    }
    second = hub_cli(
        hub.url,
        "model", "register", "-n", "digits-cli", "-p", str(folder),
        "--tag", "team=vision", "--tag", "stage=dev", "--property", "accuracy=0.96",
        "-d", "folder form", "--framework", "onnx", "-o", "json",
    )  # fmt: skip
    assert second.code == 0, second.err
    v2 = second.json()
    assert v2["version"] == 2
    assert sorted(f["path"] for f in v2["files"]) == ["model.onnx", "nested/deeper/config.json", "nested/labels.txt"]
    assert v2["tags"] == {"team": "vision", "stage": "dev"}
    assert v2["properties"] == {"accuracy": "0.96"}

    table = hub_cli(hub.url, "model", "list", "-n", "digits-cli")
    assert table.code == 0 and "digits-cli:2" in table.out and "digits-cli:1" in table.out
    tagged = hub_cli(hub.url, "model", "list", "--tag", "team=vision", "-o", "json").json()
    assert [m["id"] for m in tagged] == ["digits-cli:2"]
    assert [m["id"] for m in hub_cli(hub.url, "model", "list", "--tag", "stage", "-o", "json").json()] == [
        "digits-cli:2"
    ]
    assert hub_cli(hub.url, "model", "list", "--tag", "team=audio", "-o", "json").json() == []

    latest = hub_cli(hub.url, "model", "show", "digits-cli", "-o", "json").json()
    assert latest["id"] == "digits-cli:2" and latest["description"] == "folder form"
    shown = hub_cli(hub.url, "model", "show", "digits-cli:1")
    assert shown.code == 0 and "model.onnx" in shown.out and "models/digits-cli:1" in shown.out

    target = tmp_path / "out"
    got = hub_cli(hub.url, "model", "download", "digits-cli:2", "--target-dir", str(target))
    assert got.code == 0, got.err
    for rel in ("model.onnx", "nested/labels.txt", "nested/deeper/config.json"):
        assert (target / rel).read_bytes() == (folder / rel).read_bytes()
    assert not [p for p in target.rglob("*.part")]

    deleted = hub_cli(hub.url, "model", "delete", "digits-cli:1")
    assert deleted.code == 0 and "digits-cli:1" in deleted.out
    assert [m["id"] for m in hub_cli(hub.url, "model", "list", "-n", "digits-cli", "-o", "json").json()] == [
        "digits-cli:2"
    ]
    # numbers are never reused
    again = hub_cli(hub.url, "model", "register", "-n", "digits-cli", "-p", str(digits_model), "-o", "json")
    assert again.json()["version"] == 3


def test_identical_files_are_stored_once(hub: RunningHub, tmp_path: Path) -> None:
    f = tmp_path / "weights.bin"
    f.write_bytes(os.urandom(4096))
    _register(hub, "dedup-a", f)
    before = _blob_files(hub.data_dir)
    _register(hub, "dedup-b", f)
    added = _blob_files(hub.data_dir) - before
    assert len(added) == 1  # only the new version's manifest, not the file again
    assert hashlib.sha256(f.read_bytes()).hexdigest() not in added


# --- bad input: one line, the right exit code, registry unchanged ---------------------------------


@pytest.mark.parametrize(
    ("args", "code", "needles"),
    [
        (["model", "register", "-n", "bad name", "-p", "{model}"], 2, ["bad model name 'bad name'"]),
        (["model", "register", "-n", "x" * 256, "-p", "{model}"], 2, ["bad model name"]),
        (["model", "register", "-n", "a/b", "-p", "{model}"], 2, ["bad model name 'a/b'"]),
        (["model", "register", "-n", "ok", "-p", "{missing}"], 2, ["does not exist", "missing.onnx"]),
        (["model", "register", "-n", "ok", "-p", "{empty}"], 2, ["contains no files", "empty"]),
        (["model", "register", "-n", "ok", "-p", "{model}", "--tag", "novalue"], 2, ["bad tag 'novalue'"]),
        (["model", "register", "-n", "ok", "-p", "{model}", "--tag", "=v"], 2, ["bad tag '=v'"]),
        (["model", "register", "-n", "ok", "-p", "{model}", "--tag", "a b=c"], 2, ["bad tag key 'a b'"]),
        (["model", "register", "-n", "ok", "-p", "{model}", "--property", "p"], 2, ["bad property 'p'"]),
        (["model", "register", "-p", "{model}"], 2, ["required", "--name"]),
        (["model", "show", "no-such-model"], 2, ["model 'no-such-model' not found"]),
        (["model", "show", "known:99"], 2, ["model 'known' has no version 99"]),
        (["model", "show", "known:zero"], 2, ["version must be a positive integer"]),
        (["model", "download", "known:99", "--target-dir", "{tmp}/dl"], 2, ["has no version 99"]),
        (["model", "download", "no-such-model:1", "--target-dir", "{tmp}/dl"], 2, ["not found"]),
        (["model", "download", "known:1", "--target-dir", "{model}"], 2, ["is a file, not a folder"]),
        (["model", "delete", "known:99"], 2, ["has no version 99"]),
        (["model", "delete", "known"], 2, ["known:VERSION"]),
    ],
)
def test_bad_input(
    hub: RunningHub,
    known_model: str,
    digits_model: Path,
    tmp_path: Path,
    args: list[str],
    code: int,
    needles: list[str],
) -> None:
    (tmp_path / "empty").mkdir()
    values = {"model": str(digits_model), "missing": str(tmp_path / "missing.onnx"), "empty": str(tmp_path / "empty")}
    values["tmp"] = str(tmp_path)
    before = registry_snapshot(hub.url)
    result = hub_cli(hub.url, *[a.format(**values) for a in args])
    assert_one_line_error(result, code, *needles)
    assert registry_snapshot(hub.url) == before
    assert not (tmp_path / "dl").exists()


def test_unreadable_file_is_refused(hub: RunningHub, digits_model: Path) -> None:
    # Root reads anything, so drop the capabilities that let it (a real permission check, not a mock).
    folder = Path(tempfile.mkdtemp(prefix="unreadable-"))
    try:
        shutil.copy(digits_model, folder / "model.onnx")
        secret = folder / "secret.bin"
        secret.write_bytes(b"x" * 10)
        secret.chmod(0)
        prefix = _without_root_file_powers()
        before = registry_snapshot(hub.url)
        result = hub_cli(hub.url, "model", "register", "-n", "unreadable", "-p", str(folder), prefix=prefix)
        assert_one_line_error(result, 2, "cannot read", "secret.bin", "permission denied")
        assert registry_snapshot(hub.url) == before
    finally:
        shutil.rmtree(folder)


def test_download_into_unwritable_folder(hub: RunningHub, known_model: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix="readonly-"))
    try:
        folder.chmod(0o555)
        prefix = _without_root_file_powers()
        result = hub_cli(hub.url, "model", "download", known_model, "--target-dir", str(folder), prefix=prefix)
        assert_one_line_error(result, 2, "cannot write", "permission denied")
        assert not list(folder.iterdir())
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def _without_root_file_powers() -> list[str]:
    """A command prefix that makes file permissions bind even for root (drops the DAC override capabilities)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make permissions bind")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


def test_broken_symlink_and_special_file_are_refused(hub: RunningHub, tmp_path: Path) -> None:
    dangling = tmp_path / "dangling"
    dangling.mkdir()
    (dangling / "model.onnx").symlink_to(tmp_path / "gone.onnx")
    result = hub_cli(hub.url, "model", "register", "-n", "dangling", "-p", str(dangling))
    assert_one_line_error(result, 2, "broken symbolic link")
    fifo_dir = tmp_path / "fifo"
    fifo_dir.mkdir()
    os.mkfifo(fifo_dir / "pipe")
    result = hub_cli(hub.url, "model", "register", "-n", "fifo", "-p", str(fifo_dir))
    assert_one_line_error(result, 2, "not a regular file")


def test_hub_unreachable() -> None:
    result = hub_cli(f"http://127.0.0.1:{free_port()}", "model", "list")
    assert_one_line_error(result, 1, "cannot reach the hub", "is 'hub serve' running?")


def test_second_hub_on_same_data_dir_is_refused(hub: RunningHub, digits_model: Path) -> None:
    _register(hub, "before-second", digits_model)
    before = registry_snapshot(hub.url)
    second = subprocess.run(
        [PYTHON, "-m", "hub", "serve", "--data-dir", str(hub.data_dir), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert_one_line_error(CliResult(second.returncode, second.stdout, second.stderr), 2, "in use by another hub")
    assert hub.proc.poll() is None
    assert registry_snapshot(hub.url) == before


def _corrupt_and_check(hub: RunningHub, tmp_path: Path, name: str, damage: str) -> None:
    payload = os.urandom(200_000)
    src = tmp_path / f"{name}.bin"
    src.write_bytes(payload)
    digest = _register(hub, name, src)["files"][0]["digest"]
    # a first good download primes the hub's verification cache: damage must still be caught
    with HubClient(hub.url, token=hub.token) as client:
        client.download_model(name, 1, tmp_path / "ok")
    blob = hub.data_dir / "blobs" / "sha256" / digest.split(":")[1]
    if damage == "truncate":
        with open(blob, "r+b") as fh:
            fh.truncate(1000)
    else:  # same size, one byte flipped
        data = bytearray(blob.read_bytes())
        data[12345] ^= 0xFF
        os.chmod(blob, stat.S_IWUSR | stat.S_IRUSR)
        blob.write_bytes(bytes(data))
    before = registry_snapshot(hub.url)
    target = tmp_path / "bad"
    result = hub_cli(hub.url, "model", "download", f"{name}:1", "--target-dir", str(target))
    assert_one_line_error(result, 1, "corrupt", digest)
    assert not list(target.rglob("*")) if target.exists() else True  # nothing half-written under the real name
    assert f"corrupt blob {digest}" in hub.log()
    raw = httpx.get(f"{hub.url}/v2/models/{name}/blobs/{digest}", auth=("oci", hub.token), timeout=10)  # any OCI client
    assert raw.status_code == 500 and "is corrupt on disk" in raw.json()["errors"][0]["message"]
    assert registry_snapshot(hub.url) == before
    if damage == "truncate":  # uploading the same content again repairs the stored copy
        _register(hub, name, src)
        with HubClient(hub.url, token=hub.token) as client:
            client.download_model(name, 1, tmp_path / "healed")
        assert (tmp_path / "healed" / src.name).read_bytes() == payload


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupted_blob_is_detected_and_never_served(hub: RunningHub, tmp_path: Path, damage: str) -> None:
    _corrupt_and_check(hub, tmp_path, f"corrupt-{damage}", damage)


def test_disk_full_during_register_leaves_nothing(tmp_path: Path, processes: Processes, digits_model: Path) -> None:
    data_dir = tmp_path / "small-disk"
    data_dir.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(data_dir)], capture_output=True)
    prefix: list[str] = []
    if mounted.returncode != 0:
        # No mount privilege: cap the hub's file sizes instead (the kernel answers EFBIG, as real as ENOSPC here).
        prefix = ["prlimit", f"--fsize={3 * 2**20}"]
    try:
        hub = start_hub(processes, data_dir, name="small-hub", prefix=prefix)
        _register(hub, "small", digits_model)
        before = registry_snapshot(hub.url)
        big = tmp_path / "big"
        big.mkdir()
        (big / "a.bin").write_bytes(os.urandom(1024 * 1024))
        (big / "b.bin").write_bytes(os.urandom(4 * 1024 * 1024))
        result = hub_cli(hub.url, "model", "register", "-n", "big", "-p", str(big))
        assert_one_line_error(result, 1, "disk full")
        assert registry_snapshot(hub.url) == before
        assert not list((data_dir / "blobs" / "sha256").glob(".tmp-*"))
        # the hub keeps working once space is back
        (big / "b.bin").unlink()
        assert _register(hub, "big", big)["version"] == 1
    finally:
        processes.stop_all()
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(data_dir)], check=False)


def test_busy_port_is_a_one_line_error(hub: RunningHub, tmp_path: Path) -> None:
    result = subprocess.run(
        [PYTHON, "-m", "hub", "serve", "--data-dir", str(tmp_path / "other"), "--port", str(hub.port)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert_one_line_error(CliResult(result.returncode, result.stdout, result.stderr), 1, "cannot listen on", "in use")


def test_sigterm_stops_the_hub_cleanly_and_keeps_state(
    tmp_path: Path, processes: Processes, digits_model: Path
) -> None:
    hub = start_hub(processes, tmp_path / "data", name="term-hub")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024))  # above the progress threshold
    registered = hub_cli(hub.url, "model", "register", "-n", "kept", "-p", str(big))
    assert registered.code == 0, registered.err
    assert "uploading big.bin: 100%" in registered.err  # progress on stderr for long uploads
    assert "hub serving http://127.0.0.1:" in hub.log()
    assert processes.stop(hub.proc, signal.SIGTERM) == 0
    assert "hub stopped" in hub.log() and "Traceback" not in hub.log()
    again = start_hub(processes, tmp_path / "data", name="term-hub-again")  # the lock was released
    assert [m["id"] for m in registry_snapshot(again.url)] == ["kept:1"]
