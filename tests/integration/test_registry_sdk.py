"""The Python SDK (`hub.Workspace`, `hub.Model`) against a real `hub serve`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub import BadInput, Model, NotFound, Workspace
from tests.integration.registry_support import RunningHub, start_hub
from tests.support import Processes


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
    ws = Workspace(hub.url)
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
    ws = Workspace(hub.url)
    with pytest.raises(NotFound, match="model 'nothing' not found"):
        Model(ws, "nothing")
    with pytest.raises(BadInput, match="does not exist"):
        Model.register(ws, tmp_path / "missing", "x")
    with pytest.raises(BadInput, match="bad model name"):
        Model.register(ws, tmp_path, "bad name!")
