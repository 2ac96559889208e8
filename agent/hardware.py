"""The device's hardware inventory, reported in Hello and at enrollment.

onnxruntime providers come from a subprocess (`python -m runtimes providers`): the agent
itself never imports onnxruntime (it would triple its memory). A simulated device profile
(simulators/profiles.py writes one) is read as JSON from a file or from
`EDGEPORT_PROFILE_JSON`; the agent never imports simulators.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from agent.supervisor import run_command
from protos.edgeport.v1 import agent_pb2


class ProfileError(Exception):
    """A simulated profile could not be read (message says where and why)."""


def memory_bytes() -> int:
    """Physical memory (MemTotal of /proc/meminfo; 0 when unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def onnx_providers(python: str = sys.executable, timeout: float = 60.0) -> list[str]:
    """Execution providers onnxruntime offers here, asked of a runtime subprocess ([] when it cannot say)."""
    try:
        done = run_command([python, "-m", "runtimes", "providers"], timeout=timeout)
        value = json.loads(done.stdout) if done.returncode == 0 else []
    except (OSError, ValueError, subprocess.SubprocessError):  # no runtime installed, or it hung: report none
        return []
    return [str(p) for p in value] if isinstance(value, list) else []


def nvidia_gpus(timeout: float = 15.0) -> list[agent_pb2.Accelerator]:
    """GPUs that nvidia-smi reports ([] when it is absent or fails)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        done = run_command(
            ["nvidia-smi", "--query-gpu=name,memory.total,uuid", "--format=csv,noheader,nounits"], timeout=timeout
        )
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in done.stdout.splitlines() if done.returncode == 0 else []:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2:
            mib = int(parts[1]) if parts[1].isdigit() else 0
            attrs = {"uuid": parts[2]} if len(parts) > 2 else {}
            gpus.append(agent_pb2.Accelerator(kind="gpu", name=parts[0], memory_bytes=mib * 1024**2, attributes=attrs))
    return gpus


def load_profile(profile: str | None) -> dict | None:
    """The simulated profile: `profile` is a JSON file path; else `EDGEPORT_PROFILE_JSON` (JSON text); else None."""
    raw, where = None, ""
    if profile:
        path = Path(profile)
        if not path.is_file():
            raise ProfileError(f"--profile {profile}: no such file (give the path of a profile JSON file)")
        raw, where = path.read_text(), str(path)
    elif os.environ.get("EDGEPORT_PROFILE_JSON"):
        raw, where = os.environ["EDGEPORT_PROFILE_JSON"], "EDGEPORT_PROFILE_JSON"
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ProfileError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: a profile must be a JSON object")
    return data


def _accelerator(item: dict, where: str) -> agent_pb2.Accelerator:
    if not isinstance(item, dict) or "kind" not in item:
        raise ProfileError(f"{where}: each accelerator needs at least a 'kind'")
    return agent_pb2.Accelerator(
        kind=str(item["kind"]),
        name=str(item.get("name", "")),
        memory_bytes=int(item.get("memory_bytes", 0)),
        slots=int(item.get("slots", 0)),
        attributes={str(k): str(v) for k, v in (item.get("attributes") or {}).items()},
    )


def inventory(profile: dict | None = None, *, probe_providers: bool = True) -> agent_pb2.HardwareInventory:
    """What this device has; a simulated profile overrides what it declares (cores, memory, accelerators...)."""
    inv = agent_pb2.HardwareInventory(
        cpu_count=os.cpu_count() or 1,
        memory_bytes=memory_bytes(),
        arch=platform.machine(),
        os=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
    )
    # A profile that declares its providers needs no probe (saves an onnxruntime start per simulated agent).
    declared = bool(profile and "onnx_providers" in profile)
    inv.onnx_providers.extend(onnx_providers() if probe_providers and not declared else [])
    inv.accelerators.extend(nvidia_gpus())
    if profile:
        where = f"profile {profile.get('name', '?')}"
        inv.simulated = True
        inv.profile = str(profile.get("name", ""))
        if "cpu_count" in profile:
            inv.cpu_count = int(profile["cpu_count"])
        if "memory_bytes" in profile:
            inv.memory_bytes = int(profile["memory_bytes"])
        for key in ("arch", "os"):
            if key in profile:
                setattr(inv, key, str(profile[key]))
        if "onnx_providers" in profile:
            del inv.onnx_providers[:]
            inv.onnx_providers.extend(str(p) for p in profile["onnx_providers"])
        accelerators = profile.get("accelerators") or []
        if not isinstance(accelerators, list):
            raise ProfileError(f"{where}: 'accelerators' must be a list")
        inv.accelerators.extend(_accelerator(a, where) for a in accelerators)
    return inv
