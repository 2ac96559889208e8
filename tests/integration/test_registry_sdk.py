"""The Python SDK (`hub.Workspace`, `hub.Model`) against a real `hub serve`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub import BadInput, Model, NotFound, Workspace
from hub.errors import Unauthorized
from tests.integration.registry_support import RunningHub, start_hub
from tests.support import PYTHON, Processes


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """One hub for the module."""
    root = tmp_path_factory.mktemp("sdk-hub")
    processes = Processes(root)
    try:
        yield start_hub(processes, root / "data")
    finally:
        processes.stop_all()


def test_register_get_download_delete(hub: RunningHub, digits_model: Path, tmp_path: Path) -> None:
    ws = Workspace(hub.url, token=hub.token)
    model = Model.register(
        ws,
        model_path=str(digits_model),
        model_name="sdk-digits",
        tags={"area": "vision"},
        properties={"accuracy": "0.96"},
        description="digits classifier",
    )
    assert (model.name, model.version, model.id) == ("sdk-digits", 1, "sdk-digits:1")
    assert model.tags == {"area": "vision"} and model.properties == {"accuracy": "0.96"}
    assert model.description == "digits classifier"
    second = Model.register(ws, digits_model, "sdk-digits")
    assert second.version == 2

    latest = Model(ws, "sdk-digits")
    assert latest.version == 2
    first = Model(ws, "sdk-digits", version=1)
    assert first.tags == {"area": "vision"} and first.files[0]["path"] == "model.onnx"
    assert [m.id for m in Model.list(ws, name="sdk-digits")] == ["sdk-digits:2", "sdk-digits:1"]
    assert [m.id for m in Model.list(ws, tags=["area=vision"])] == ["sdk-digits:1"]

    target = tmp_path / "dl"
    assert first.download(target) == str(target)
    assert (target / "model.onnx").read_bytes() == digits_model.read_bytes()

    first.delete()
    with pytest.raises(NotFound, match="has no version 1"):
        Model(ws, "sdk-digits", version=1)
    assert Model(ws, "sdk-digits").version == 2
    ws.close()


def test_workspace_from_config(hub: RunningHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / ".edgeport").mkdir(parents=True)
    (project / ".edgeport" / "config.json").write_text(json.dumps({"hub": hub.url}))
    deep = project / "src" / "pkg"
    deep.mkdir(parents=True)

    assert Workspace.from_config(project / ".edgeport" / "config.json").url == hub.url
    assert Workspace.from_config(deep).url == hub.url  # searched upward
    monkeypatch.chdir(deep)
    monkeypatch.delenv("EDGEPORT_TOKEN", raising=False)
    monkeypatch.setenv("EDGEPORT_CONFIG", str(tmp_path / "user" / "config.json"))
    with pytest.raises(Unauthorized, match="hub login"):  # no token anywhere: the message says where to put one
        Model.list(Workspace.from_config())
    # `hub login` stores the token (0600) where the SDK's Workspace finds it for that hub
    env = {**os.environ, "EDGEPORT_CONFIG": str(tmp_path / "user" / "config.json")}
    login = subprocess.run([PYTHON, "-m", "hub", "login", "--hub", hub.url, "--token", hub.token],
                           capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert login.returncode == 0 and "as admin (admin)" in login.stdout, login.stderr
    assert stat.S_IMODE((tmp_path / "user" / "config.json").stat().st_mode) == 0o600
    ws = Workspace.from_config()
    assert ws.url == hub.url
    assert isinstance(Model.list(ws), list)

    bad = tmp_path / "bad.json"
    bad.write_text('{"url": "x"}')
    with pytest.raises(BadInput, match="needs"):
        Workspace.from_config(bad)
    with pytest.raises(BadInput, match="does not exist"):
        Workspace.from_config(tmp_path / "missing.json")


def test_sdk_errors_are_hub_errors(hub: RunningHub, tmp_path: Path) -> None:
    ws = Workspace(hub.url, token=hub.token)
    with pytest.raises(NotFound, match="model 'nothing' not found"):
        Model(ws, "nothing")
    with pytest.raises(BadInput, match="does not exist"):
        Model.register(ws, tmp_path / "missing", "x")
    with pytest.raises(BadInput, match="bad model name"):
        Model.register(ws, tmp_path, "bad name!")
