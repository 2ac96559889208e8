"""Python environments for runtimes, one venv per requirements hash.

An empty requirements list runs the runtime on the agent's own interpreter. Otherwise the
agent builds `DATA_DIR/envs/<hash>/` once: a venv with `--system-site-packages` (so the
runtime package and onnxruntime already installed on the device stay visible) plus the
service's pip requirements; a `.ready` marker is written only after pip succeeded, so a
half-built venv (agent killed mid-install) is rebuilt rather than used.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import threading
from pathlib import Path

from agent.supervisor import run_command
from protos.edgeport.v1 import agent_pb2

PIP_TIMEOUT_S = 900.0


class EnvironmentError_(Exception):
    """A service's Python environment could not be built (message carries pip's last lines)."""


def requirements_hash(requirements: list[str]) -> str:
    """Stable key of a requirements list: sha256 of the sorted, stripped, non-empty lines."""
    lines = sorted({r.strip() for r in requirements if r.strip()})
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


class EnvironmentCache:
    """Venvs under `root`, keyed by requirements hash; thread-safe."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()

    def shared_python(self, env: agent_pb2.Environment) -> str | None:
        """The agent's own interpreter when `env` needs no venv (no requirements), else None; never blocks."""
        return None if any(r.strip() for r in env.pip_requirements) else sys.executable

    def python_for(self, env: agent_pb2.Environment) -> str:
        """The interpreter to run a runtime with for `env`, building its venv on first use (blocking)."""
        requirements = [r for r in env.pip_requirements if r.strip()]
        if not requirements:
            return sys.executable
        key = requirements_hash(requirements)
        venv = self.root / key
        python = venv / "bin" / "python"
        with self._lock:
            if (venv / ".ready").exists() and python.exists():
                return str(python)
            shutil.rmtree(venv, ignore_errors=True)
            venv.parent.mkdir(parents=True, exist_ok=True)
            # No pip inside the venv (ensurepip takes seconds): the agent's pip installs into it with --python.
            made = run_command(
                [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], timeout=120
            )
            if made.returncode != 0:
                raise EnvironmentError_(f"creating venv {venv} failed: {made.stderr.strip()[-500:]}")
            (venv / "requirements.txt").write_text("\n".join(requirements) + "\n")
            pip = run_command(
                [sys.executable, "-m", "pip", "--python", str(python), "install", "--disable-pip-version-check", "-q",
                 "-r", str(venv / "requirements.txt")],
                timeout=PIP_TIMEOUT_S,
            )  # fmt: skip
            if pip.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                last = (pip.stderr or pip.stdout).strip().splitlines()[-5:]
                raise EnvironmentError_("pip install of the service requirements failed: " + " | ".join(last))
            (venv / ".ready").write_text(key + "\n")
            return str(python)

    def remove_unused(self, in_use: set[str]) -> None:
        """Delete venvs whose hash no current or last-good generation uses."""
        if not self.root.exists():
            return
        for venv in self.root.iterdir():
            if venv.is_dir() and venv.name not in in_use:
                shutil.rmtree(venv, ignore_errors=True)
