"""An onnxruntime session tuned for the HardwareProfile: providers, threads, graph optimization, memory."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtimes.tuning.hardware import HardwareProfile
from runtimes.tuning.providers import available_providers, choose_providers

log = logging.getLogger("runtimes.tuning")


@dataclass(frozen=True)
class SessionChoice:
    """What was asked for and what the session really got (logged at start, shown in metadata)."""

    requested: list[str]
    actual: list[str]
    intra_op_threads: int
    model_path: Path

    def describe(self) -> str:
        """One line a person can read."""
        return (
            f"onnxruntime session for {self.model_path.name}: providers {','.join(self.actual)} "
            f"(asked {','.join(self.requested)}), intra-op threads {self.intra_op_threads}, graph optimization all"
        )


def create_session(
    model_path: Path, profile: HardwareProfile, requested_providers: list[str] | None = None
) -> tuple[Any, SessionChoice]:
    """Open `model_path` with options derived from `profile`; return the session and the choice made."""
    import onnxruntime as ort

    providers = choose_providers(available_providers(), requested_providers)
    opts = ort.SessionOptions()
    # Threads from the CPU quota the service is given: more threads than cores only adds contention.
    opts.intra_op_num_threads = profile.cpus
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_mem_pattern = True  # shapes repeat request to request: reuse the allocation plan
    opts.enable_cpu_mem_arena = True
    # Spinning workers burn the cores the HTTP loop needs between requests on small devices.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(model_path), sess_options=opts, providers=providers)
    actual = list(sess.get_providers())
    choice = SessionChoice(providers, actual, profile.cpus, Path(model_path))
    if actual[0] != providers[0]:
        log.warning("asked for %s first but the session got %s", providers[0], actual[0])
    return sess, choice
