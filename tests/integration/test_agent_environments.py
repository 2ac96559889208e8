"""Service environments: a venv per requirements hash built with real pip (offline, from a local wheel)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from agent.environments import EnvironmentCache, EnvironmentError_, requirements_hash
from protos.edgeport.v1 import agent_pb2


def _wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel `edgeport_envprobe` (built by hand: no network, no build backend)."""
    path = folder / "edgeport_envprobe-1.0-py3-none-any.whl"
    dist = "edgeport_envprobe-1.0.dist-info"
    files = {
        "edgeport_envprobe/__init__.py": "VALUE = 42\n",
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: edgeport-envprobe\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in {**files, f"{dist}/RECORD": record}.items():
            zf.writestr(name, text)
    return path


def test_empty_requirements_use_the_agents_interpreter(tmp_path: Path) -> None:
    assert EnvironmentCache(tmp_path).python_for(agent_pb2.Environment()) == sys.executable
    assert not any(tmp_path.iterdir())


def test_venv_built_once_per_hash_and_sees_the_runtime(tmp_path: Path) -> None:
    envs = EnvironmentCache(tmp_path / "envs")
    env = agent_pb2.Environment(pip_requirements=[str(_wheel(tmp_path))])
    python = envs.python_for(env)
    assert Path(python).parent.parent.name == requirements_hash(list(env.pip_requirements))
    probe = "import edgeport_envprobe, runtimes; print(edgeport_envprobe.VALUE)"
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "42", done.stderr
    mine = subprocess.run([sys.executable, "-c", "import edgeport_envprobe"], capture_output=True, timeout=60)
    assert mine.returncode != 0  # installed into the venv only, not into the agent's interpreter
    marker = Path(python).parent.parent / ".ready"
    before = marker.stat().st_mtime_ns
    assert envs.python_for(env) == python and marker.stat().st_mtime_ns == before  # cached: not rebuilt


def test_failing_requirement_says_so_and_leaves_nothing(tmp_path: Path) -> None:
    envs = EnvironmentCache(tmp_path / "envs")
    env = agent_pb2.Environment(pip_requirements=[str(tmp_path / "no-such-package-1.0-py3-none-any.whl")])
    with pytest.raises(EnvironmentError_, match="pip install of the service requirements failed"):
        envs.python_for(env)
    assert not any((tmp_path / "envs").iterdir())
