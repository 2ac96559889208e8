"""Hardware inventory: real probes, simulated profiles (as simulators/profiles.py writes them), bad profiles."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.hardware import ProfileError, inventory, load_profile
from simulators.profiles import get_profile


def test_real_inventory_without_a_profile() -> None:
    inv = inventory(None, probe_providers=False)
    assert inv.cpu_count == os.cpu_count() and inv.memory_bytes > 0
    assert inv.arch and inv.os.startswith("Linux") and inv.python
    assert not inv.simulated and inv.profile == ""


def test_fpga_profile_file_declares_its_accelerators(tmp_path: Path) -> None:
    path = tmp_path / "fpga.json"
    path.write_text(get_profile("fpga-board").to_json())
    inv = inventory(load_profile(str(path)), probe_providers=False)
    assert inv.simulated and inv.profile == "fpga-board"
    fpgas = [a for a in inv.accelerators if a.kind == "fpga"]
    assert fpgas and fpgas[0].slots > 0 and fpgas[0].name


def test_profile_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPORT_PROFILE_JSON", get_profile("iot-edge").to_json())
    inv = inventory(load_profile(None), probe_providers=False)
    expected = json.loads(get_profile("iot-edge").to_json())
    assert inv.profile == "iot-edge" and inv.cpu_count == expected["cpu_count"] and inv.arch == expected["arch"]


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object"),
     ('{"name": "x", "accelerators": [{"name": "no kind"}]}', "needs at least a 'kind'")],
)  # fmt: skip
def test_bad_profiles_say_what_is_wrong(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(ProfileError, match=message):
        inventory(load_profile(str(path)), probe_providers=False)


def test_missing_profile_file() -> None:
    with pytest.raises(ProfileError, match="no such file"):
        load_profile("/nonexistent/profile.json")
