"""Deploys a new user makes first, through the hub CLI to a real `agent run` (mutual TLS), ending in what the
hub shows: a source folder with an empty `__init__.py`, an entry script whose init() raises, and a model whose
blob is damaged on the hub's disk."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.registry_support import CliResult, hub_cli, remember_hub
from tests.support import PYTHON, REPO, Processes, free_port, wait_for

SCORE_PY = "def init():\n    pass\n\n\ndef run(raw):\n    return {'echo': raw}\n"
BROKEN_PY = (
    'def init():\n    raise RuntimeError("calibration table missing: /etc/cal.json")\n\n\n'
    "def run(raw):\n    return raw\n"
)
PULL_RETRY_WINDOW_S = 4  # the agent's bounded retries of a pull the hub keeps refusing (default 5 minutes)
CAUSE = "RuntimeError: calibration table missing: /etc/cal.json"
PACKAGE_SCORE_PY = (
    "from helpers.consts import ANSWER\n\n\ndef init():\n    pass\n\n\ndef run(raw):\n    return {'answer': ANSWER}\n"
)


@dataclass
class Setup:
    """A hub, one enrolled agent, and the folder test files go to."""

    url: str
    hub_data: Path
    device: str
    files: Path
    processes: Processes
    agent: Any


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, procs: Processes) -> Iterator[Setup]:
    """One hub (mutual TLS on its gRPC port) and one agent that pulls with a short retry window."""
    tmp = tmp_path_factory.mktemp("agent-deploys")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs.start([PYTHON, "-m", "hub", "serve", "--data-dir", str(tmp / "hub"), "--port", str(port),
                 "--grpc-port", str(free_port())], name="hub", cwd=REPO)  # fmt: skip
    wait_for(lambda: httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200, timeout=30, what="hub up")
    remember_hub(url, tmp / "hub")
    token = _ok(hub_cli(url, "device", "enroll", "dev-1", "--output", "json")).json()["token"]
    agent = procs.start(
        [PYTHON, "-m", "agent", "run", "--hub", f"127.0.0.1:{port}", "--data-dir", str(tmp / "agent"),
         "--token", token, "--heartbeat-s", "2", "--pull-retry-window-s", str(PULL_RETRY_WINDOW_S)],
        name="agent", cwd=REPO,
    )  # fmt: skip
    wait_for(lambda: "connected to hub" in procs.log(agent), timeout=30, what="agent connected")
    yield Setup(url, tmp / "hub", "dev-1", tmp / "files", procs, agent)


def _ok(result: CliResult) -> CliResult:
    assert result.code == 0, f"exit {result.code}\nstdout:\n{result.out}\nstderr:\n{result.err}"
    return result


def _source(setup: Setup, name: str, files: dict[str, str]) -> Path:
    """A source folder with `files` and an inference config pointing at it; returns the config's path."""
    folder = setup.files / name
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    ic = setup.files / f"{name}-ic.json"
    ic.write_text(json.dumps({"entryScript": "score.py", "sourceDirectory": name, "runtime": "python"}))
    return ic


def _model(setup: Setup, name: str, content: bytes) -> None:
    folder = setup.files / f"model-{name}" / str(len(list(setup.files.glob(f"model-{name}/*"))) + 1)
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(content)
    _ok(hub_cli(setup.url, "model", "register", "-n", name, "-p", str(folder)))


def test_a_source_folder_with_an_empty_init_py_deploys(setup: Setup) -> None:
    # Empty files (two of them, one content) and two files with the same content: each is one blob.
    ic = _source(setup, "empty-init", {"score.py": PACKAGE_SCORE_PY, "__init__.py": "", "helpers/__init__.py": "",
                                       "helpers/consts.py": "ANSWER = 42\n", "echo.py": SCORE_PY,
                                       "echo_copy.py": SCORE_PY})  # fmt: skip
    _model(setup, "empty-init-model", b"weights")
    done = _ok(hub_cli(setup.url, "deploy", "-n", "empty-init", "-m", "empty-init-model:1", "--ic", str(ic),
                       "--target", setup.device, "--timeout", "90", "--output", "json"))  # fmt: skip
    shown = done.json()
    assert shown["state"] == "Healthy", shown
    (device,) = shown["devices"]
    reply = httpx.post(device["scoring_uri"], json={"x": 1}, timeout=10)
    assert reply.status_code == 200 and reply.json() == {"answer": 42}, reply.text


def test_a_failed_start_names_the_runtimes_own_error_line(setup: Setup) -> None:
    """Rolled back (a good generation keeps serving) and Failed (nothing to go back to): both say why, in the
    table and in JSON."""
    good = _source(setup, "cal-good", {"score.py": SCORE_PY})
    broken = _source(setup, "cal-bad", {"score.py": BROKEN_PY})
    _model(setup, "cal-model", b"calibration")
    _ok(hub_cli(setup.url, "deploy", "-n", "cal", "-m", "cal-model:1", "--ic", str(good), "--target", setup.device,
                "--timeout", "90"))  # fmt: skip
    update = hub_cli(setup.url, "service", "update", "-n", "cal", "--ic", str(broken), "--timeout", "90")
    assert update.code == 1 and CAUSE in update.err, update.err
    table = _ok(hub_cli(setup.url, "service", "show", "cal")).out
    assert "RolledBack" in table and CAUSE in table, table
    (device,) = _ok(hub_cli(setup.url, "service", "show", "cal", "--output", "json")).json()["devices"]
    assert device["phase"] == "RolledBack" and device["serving_generation"] == 1
    assert device["message"] == (
        f"generation 2 failed: runtime exited with code 1 during start: {CAUSE}; rolled back to generation 1"
    )
    assert httpx.post(device["scoring_uri"], json={"x": 1}, timeout=10).status_code == 200  # still serving

    fresh = hub_cli(setup.url, "deploy", "-n", "cal-fresh", "-m", "cal-model:1", "--ic", str(broken),
                    "--target", setup.device, "--timeout", "90")  # fmt: skip
    assert fresh.code == 1 and CAUSE in fresh.err, fresh.err
    assert CAUSE in _ok(hub_cli(setup.url, "service", "show", "cal-fresh")).out
    (device,) = _ok(hub_cli(setup.url, "service", "show", "cal-fresh", "--output", "json")).json()["devices"]
    assert device["phase"] == "Failed" and device["message"] == f"runtime exited with code 1 during start: {CAUSE}"


def test_a_blob_damaged_on_the_hub_fails_the_deploy_after_the_retry_window(setup: Setup) -> None:
    """The hub refuses to serve a blob whose bytes no longer match its digest; the agent retries for its window,
    then reports why. A serving generation keeps serving."""
    ic = _source(setup, "dmg", {"score.py": SCORE_PY})
    _model(setup, "dmg-model", b"good weights, version 1")
    damaged = b"weights of version 2, soon damaged on the hub's disk"
    _model(setup, "dmg-model", damaged)
    digest = "sha256:" + hashlib.sha256(damaged).hexdigest()
    blob = setup.hub_data / "blobs" / "sha256" / digest.removeprefix("sha256:")
    assert blob.is_file()
    _ok(hub_cli(setup.url, "deploy", "-n", "dmg", "-m", "dmg-model:1", "--ic", str(ic), "--target", setup.device,
                "--timeout", "90"))  # fmt: skip
    blob.chmod(0o644)
    blob.write_bytes(damaged[:-1] + b"?")  # one byte changed: same size, other digest

    started = time.monotonic()
    update = hub_cli(setup.url, "service", "update", "-n", "dmg", "-m", "dmg-model:2", "--timeout", "90")
    took = time.monotonic() - started
    assert update.code == 1 and "corrupt" in update.err, update.err
    assert took >= PULL_RETRY_WINDOW_S, f"gave up after {took:.1f}s, before the {PULL_RETRY_WINDOW_S}s window"
    shown = _ok(hub_cli(setup.url, "service", "show", "dmg", "--output", "json")).json()
    assert shown["state"] == "Failed" and shown["generation"] == 2
    (device,) = shown["devices"]
    assert device["phase"] == "RolledBack" and device["serving_generation"] == 1, device
    assert f"says blob {digest} of models/dmg-model is corrupt" in device["message"]
    assert f"still refused after retrying for {PULL_RETRY_WINDOW_S}s" in device["message"]
    assert httpx.post(device["scoring_uri"], json={"x": 1}, timeout=10).status_code == 200  # generation 1 serves

    fresh = hub_cli(setup.url, "deploy", "-n", "dmg-fresh", "-m", "dmg-model:2", "--ic", str(ic),
                    "--target", setup.device, "--timeout", "90")  # fmt: skip
    assert fresh.code == 1 and "corrupt" in fresh.err, fresh.err
    shown = _ok(hub_cli(setup.url, "service", "show", "dmg-fresh", "--output", "json")).json()
    assert shown["state"] == "Failed"
    (device,) = shown["devices"]
    assert device["phase"] == "Failed", device
    assert f"says blob {digest} of models/dmg-model is corrupt" in device["message"]
    assert "corrupt" in _ok(hub_cli(setup.url, "service", "show", "dmg-fresh")).out
