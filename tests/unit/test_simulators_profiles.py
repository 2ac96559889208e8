"""Simulated device profiles: data the real agent reads (agent.hardware), nothing real claimed."""

from __future__ import annotations

import json

import pytest

from agent.hardware import inventory, load_profile
from simulators.profiles import PROFILES, UnknownProfile, get_profile


def test_the_four_profiles_exist_with_their_defining_traits() -> None:
    assert set(PROFILES) == {"cloud-vm", "k8s-node", "iot-edge", "fpga-board"}
    iot = PROFILES["iot-edge"]
    assert iot.arch == "aarch64" and iot.cpu_count == 4 and 1 <= iot.memory_bytes / 1024**3 <= 2
    assert iot.transport == "mqtt" and iot.link.flaky
    fpga = [a for a in PROFILES["fpga-board"].accelerators if a.kind == "fpga"]
    assert fpga and fpga[0].slots > 0
    assert PROFILES["cloud-vm"].cpu_count >= 8
    for profile in PROFILES.values():  # a runtime never gets more than the device has
        assert profile.resources.cpu <= profile.cpu_count
        assert profile.resources.memory_gb * 1024**3 <= profile.memory_bytes


@pytest.mark.parametrize("name", [*PROFILES, "cloud-vm-gpu"])
def test_the_agent_reads_each_profile_json_into_its_inventory(
    name: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = get_profile(name)
    path = tmp_path / f"{name}.json"
    path.write_text(profile.to_json())
    monkeypatch.setattr("agent.hardware.nvidia_gpus", lambda: [])  # this machine's GPUs are not the profile's
    inv = inventory(load_profile(str(path)), probe_providers=False)
    assert inv.simulated and inv.profile == name
    assert (inv.cpu_count, inv.memory_bytes, inv.arch) == (profile.cpu_count, profile.memory_bytes, profile.arch)
    assert list(inv.onnx_providers) == list(profile.onnx_providers)
    assert [(a.kind, a.slots) for a in inv.accelerators] == [(a.kind, a.slots) for a in profile.accelerators]
    # every declared accelerator says it is simulated
    assert all(a.attributes.get("simulated") == "true" for a in inv.accelerators)
    data = json.loads(profile.to_json())
    assert data["resources"] == {"cpu": profile.resources.cpu, "memory_gb": profile.resources.memory_gb}


def test_the_optional_gpu_is_added_only_to_the_gpu_variant() -> None:
    assert not [a for a in PROFILES["cloud-vm"].accelerators if a.kind == "gpu"]
    gpu = get_profile("cloud-vm-gpu")
    assert [a.kind for a in gpu.accelerators] == ["gpu"]
    assert gpu.onnx_providers[0] == "CUDAExecutionProvider"


def test_an_unknown_profile_names_the_choices() -> None:
    with pytest.raises(UnknownProfile, match=r"unknown device profile 'toaster'.*iot-edge"):
        get_profile("toaster")
