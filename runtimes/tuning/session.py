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
class Concurrency:
    """How a compute-bound model shares the CPUs: up to `workers` calls at once on one session whose
    intra-op pool has `intra_op_threads` threads (the calling thread included).

    Default: one call per usable CPU, each allowed every CPU. A lone request still splits its
    operators over all cores (lowest latency); concurrent requests share the one pool, and a call
    whose helpers are busy runs its operators on its own thread, so the cores stay busy with
    independent calls instead of waiting at each operator's barrier for a helper that wrk or the
    HTTP loop preempted. Runnable threads stay below 2 x cpus (workers + pool), and with spinning
    off, idle helpers sleep. Measured in-process on 2 cores, SqueezeNet, saturated: one call at a
    time on 2 threads 347 calls/s; 2 calls on a 2-thread pool 441; 2 single-threaded calls 487
    (best throughput, but a lone request gets one core: 325 calls/s at 1 client).
    `workers=1` is the old one-call-at-a-time policy; `intra_op_threads=1` the pure-throughput one.
    """

    workers: int
    intra_op_threads: int
    reason: str

    @classmethod
    def plan(
        cls, profile: HardwareProfile, workers: int | None = None, intra_op_threads: int | None = None
    ) -> Concurrency:
        """Calls at once (default one per usable CPU) and intra-op threads (default all usable CPUs)."""
        parts = [f"--model-workers {workers}" if workers else f"default workers: one per usable cpu ({profile.cpus})"]
        if intra_op_threads:
            parts.append(f"--intra-op-threads {intra_op_threads}")
        return cls(max(1, workers or profile.cpus), max(1, intra_op_threads or profile.cpus), ", ".join(parts))

    def describe(self) -> str:
        """One line a person can read."""
        return (
            f"up to {self.workers} model call(s) at once sharing {self.intra_op_threads} intra-op thread(s), "
            f"no spinning ({self.reason})"
        )


@dataclass(frozen=True)
class SessionChoice:
    """What was asked for and what the session really got (logged at start, shown in metadata)."""

    requested: list[str]
    actual: list[str]
    intra_op_threads: int
    model_path: Path
    concurrency: Concurrency | None = None

    def describe(self) -> str:
        """One line a person can read."""
        return (
            f"onnxruntime session for {self.model_path.name}: providers {','.join(self.actual)} "
            f"(asked {','.join(self.requested)}), intra-op threads {self.intra_op_threads}, graph optimization all"
        )


def create_session(
    model_path: Path,
    profile: HardwareProfile,
    requested_providers: list[str] | None = None,
    concurrency: Concurrency | None = None,
) -> tuple[Any, SessionChoice]:
    """Open `model_path` with options derived from `profile` and `concurrency` (default: one call at a
    time on all CPUs); return the session and the choice made."""
    import onnxruntime as ort

    providers = choose_providers(available_providers(), requested_providers)
    opts = ort.SessionOptions()
    # Threads from the CPU quota the service is given, divided between the calls that run at once:
    # more threads than cores only adds contention.
    intra = concurrency.intra_op_threads if concurrency is not None else profile.cpus
    opts.intra_op_num_threads = intra
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_mem_pattern = True  # shapes repeat request to request: reuse the allocation plan
    opts.enable_cpu_mem_arena = True
    # Spinning workers burn the cores the HTTP loop (and concurrent calls) need: measured on 2 cores,
    # SqueezeNet at 16 clients cost 6.7-7.7 ms of CPU per request with spinning against 4.3 without.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(model_path), sess_options=opts, providers=providers)
    actual = list(sess.get_providers())
    choice = SessionChoice(providers, actual, intra, Path(model_path), concurrency)
    if actual[0] != providers[0]:
        log.warning("asked for %s first but the session got %s", providers[0], actual[0])
    return sess, choice
