"""`hub deploy --ic`: what of the source folder is uploaded, what the user is told, and a file that grows meanwhile."""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.registry_support import (
    CliResult,
    api_request,
    assert_one_line_error,
    hub_cli,
    hub_token,
    start_hub,
)
from tests.support import Processes

TARGET = "site=source-test"


@pytest.fixture(scope="module")
def hub_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real hub with one enrolled device (no agent: the tests stop at the recorded desired state) and a model."""
    tmp = tmp_path_factory.mktemp("deploy-source")
    processes = Processes(tmp)
    try:
        hub = start_hub(processes, tmp / "hub")
        assert hub_cli(hub.url, "device", "enroll", "cam-01", "--label", TARGET).code == 0
        (tmp / "model.onnx").write_bytes(b"not scored in these tests")
        assert hub_cli(hub.url, "model", "register", "-n", "digits", "-p", str(tmp / "model.onnx")).code == 0
        yield hub.url
    finally:
        processes.stop_all()


def _source(root: Path, files: dict[str, str | bytes]) -> Path:
    """A source folder with `files` and an inference config next to it; returns the config's path."""
    for rel, content in files.items():
        path = root / "src" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    ic = root / "inferenceconfig.json"
    ic.write_text(json.dumps({"entryScript": "score.py", "sourceDirectory": "./src", "runtime": "python"}))
    return ic


def _deploy(url: str, name: str, ic: Path) -> CliResult:
    return hub_cli(url, "deploy", "-n", name, "-m", "digits:1", "--ic", str(ic), "--target", TARGET, "--no-wait")


def _hub_has(url: str, content: str | bytes) -> bool:
    raw = content.encode() if isinstance(content, str) else content
    req = api_request(url, f"/api/v1/blobs/sha256:{hashlib.sha256(raw).hexdigest()}", method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=10):
            return True
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
        return False


@pytest.mark.parametrize("ignore_file", [".amlignore", ".gitignore"])
def test_ignore_file_decides_what_is_uploaded(hub_url: str, tmp_path: Path, ignore_file: str) -> None:
    score = f"def init():\n    pass\n\ndef run(data):\n    return '{ignore_file}'\n"
    left_out = f"rows that must stay on this machine ({ignore_file})"
    ic = _source(tmp_path, {
        ignore_file: "data/\n*.log\n",
        "score.py": score,
        "data/rows.csv": left_out,
        "train.log": f"log lines ({ignore_file})",
    })
    name = "svc" + ignore_file.replace(".", "-")
    result = _deploy(hub_url, name, ic)
    assert result.code == 0, result.err
    assert f"uploading 2 files ({len(score) + 12} B) from {tmp_path / 'src'}; " \
           f"2 left out by {ignore_file}" in result.out, result.out
    assert _hub_has(hub_url, score)
    assert not _hub_has(hub_url, left_out)
    assert not _hub_has(hub_url, f"log lines ({ignore_file})")
    assert result.err == ""  # nothing to warn about


def test_key_like_files_and_a_large_folder_are_warned_about(hub_url: str, tmp_path: Path) -> None:
    ic = _source(tmp_path, {"score.py": "def init(): pass\ndef run(d): return d\n", "id_rsa": "PRIVATE",
                            "certs/client.pem": "PRIVATE"})
    with open(tmp_path / "src" / "weights.bin", "wb") as fh:  # sparse, so cheap to make
        fh.truncate(51 * 1024 * 1024)
    result = _deploy(hub_url, "svc-warned", ic)
    assert result.code == 0, result.err
    assert "uploading 4 files (51.0 MB)" in result.out
    warnings = [line for line in result.err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, result.err
    assert "certs/client.pem, id_rsa" in warnings[0] and "private keys" in warnings[0]
    assert "51.0 MB" in warnings[1] and "weights.bin" in warnings[1] and ".amlignore" in warnings[1]
    assert "Traceback" not in result.err


def test_a_file_growing_during_the_upload_fails_naming_it_and_registers_nothing(hub_url: str, tmp_path: Path) -> None:
    score = "def init(): pass\ndef run(d): return 'growing test'\n"
    ic = _source(tmp_path, {"score.py": score, "train.log": b"x" * (32 * 1024 * 1024)})
    log = tmp_path / "src" / "train.log"
    stop = threading.Event()

    def append() -> None:  # a training job's log, written all the while
        with open(log, "ab") as fh:
            while not stop.is_set():
                fh.write(b"y" * 4096)
                fh.flush()
                stop.wait(0.0005)

    writer = threading.Thread(target=append, daemon=True)
    writer.start()
    try:
        result = _deploy(hub_url, "svc-growing", ic)
    finally:
        stop.set()
        writer.join(5)
    assert_one_line_error(result, 1, str(log), "changed while it was read")
    assert hub_cli(hub_url, "service", "show", "svc-growing").code == 2  # no such service
    assert not _hub_has(hub_url, score)  # nothing uploaded either


def test_the_sdk_warns_about_key_like_files_and_refuses_a_changing_one(hub_url: str, tmp_path: Path) -> None:
    from hub import InferenceConfig, Webservice, Workspace
    from hub.sourcedir import SourceChanged

    ws = Workspace(hub_url, token=hub_token(hub_url))
    _source(tmp_path, {"score.py": "def init(): pass\ndef run(d): return 'sdk'\n", "deploy.key": "PRIVATE"})
    ic = InferenceConfig(entry_script="score.py", source_directory=tmp_path / "src")
    with pytest.warns(UserWarning, match=r"deploy\.key .* looks like a private key"):
        service = Webservice.deploy(ws, "svc-sdk", ["digits:1"], ic, target=TARGET)
    assert service.reload().generation == 1

    log = tmp_path / "src" / "train.log"
    log.write_bytes(b"x" * (32 * 1024 * 1024))
    stop = threading.Event()

    def append() -> None:
        with open(log, "ab") as fh:
            while not stop.is_set():
                fh.write(b"y" * 4096)
                fh.flush()
                stop.wait(0.0005)

    writer = threading.Thread(target=append, daemon=True)
    writer.start()
    try:
        with pytest.raises(SourceChanged, match=r"train\.log changed while it was read"):
            service.update(inference_config=ic)
    finally:
        stop.set()
        writer.join(5)
    assert service.reload().generation == 1  # the failed update recorded nothing


def test_an_entry_script_left_out_by_the_ignore_file_is_bad_input(hub_url: str, tmp_path: Path) -> None:
    ic = _source(tmp_path, {".amlignore": "*.py\n", "score.py": "def init(): pass\ndef run(d): return d\n"})
    result = _deploy(hub_url, "svc-no-entry", ic)
    assert_one_line_error(result, 2, "entry script score.py is left out of", ".amlignore")
    assert hub_cli(hub_url, "service", "show", "svc-no-entry").code == 2
