"""An onnxruntime session tuned for the HardwareProfile: providers, threads, graph optimization, memory."""

from __future__ import annotations

import logging
import os
import tempfile
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

    Default: one call per usable CPU, each single-threaded (the CPUs split between the calls).
    Splitting one call over non-spinning threads pays a wake-up at every operator and stalls at its
    barrier whenever the HTTP loop or the client preempts a helper; independent calls keep every
    core busy. Measured on 2 shared cores, SqueezeNet V2 binary at 16 clients, CPU per request and
    req/s in the same two windows: one call at a time on 2 threads 4.8/3.9 ms (247/434 req/s), two
    calls sharing a 2-thread pool 4.4/4.1 ms (240/462), two single-threaded calls 3.6/3.7 ms
    (323/521). In-process, saturated: 347, 441 and 487 calls/s. The cost: a lone request gets one
    core (325 calls/s in-process against 347-456 on 2 threads), so `--model-workers 1` (one call at a
    time on every CPU) is the choice for latency with few clients.
    """

    workers: int
    intra_op_threads: int
    reason: str

    @classmethod
    def plan(
        cls, profile: HardwareProfile, workers: int | None = None, intra_op_threads: int | None = None
    ) -> Concurrency:
        """Calls at once (default one per usable CPU); intra-op threads default to the CPUs divided
        between them (at least one)."""
        n = max(1, workers or profile.cpus)
        parts = [f"--model-workers {workers}" if workers else f"default: one call per usable cpu ({profile.cpus})"]
        if intra_op_threads:
            parts.append(f"--intra-op-threads {intra_op_threads}")
        return cls(n, max(1, intra_op_threads or profile.cpus // n), ", ".join(parts))

    def describe(self) -> str:
        """One line a person can read."""
        return (
            f"up to {self.workers} model call(s) at once, {self.intra_op_threads} intra-op thread(s) in the "
            f"session's pool, no spinning ({self.reason})"
        )


@dataclass(frozen=True)
class SessionChoice:
    """What was asked for and what the session really got (logged at start, shown in metadata)."""

    requested: list[str]
    actual: list[str]
    intra_op_threads: int
    model_path: Path
    concurrency: Concurrency | None = None

    @property
    def missing(self) -> list[str]:
        """Providers asked for that the started session does not use (onnxruntime fell back)."""
        return [p for p in self.requested if p not in self.actual and p != "CPUExecutionProvider"]

    def describe(self) -> str:
        """One line a person can read."""
        verified = f"NOT {','.join(self.missing)}" if self.missing else "as asked"
        return (
            f"onnxruntime session for {self.model_path.name}: providers {','.join(self.actual)} "
            f"(session.get_providers(), {verified}; asked {','.join(self.requested)}), "
            f"intra-op threads {self.intra_op_threads}, graph optimization all"
        )


def create_session(
    model_path: Path,
    profile: HardwareProfile,
    requested_providers: list[str] | None = None,
    concurrency: Concurrency | None = None,
    strict: bool = False,
) -> tuple[Any, SessionChoice]:
    """Open `model_path` with options derived from `profile` and `concurrency` (default: all CPUs
    as intra-op threads); return the session and the choice made.

    The providers the session really uses (`session.get_providers()`) are checked against those
    asked for: onnxruntime silently falls back to CPU when CUDA or TensorRT cannot start (missing
    libraries, no device). A fallback is a warning, or with `strict` a ValueError.
    """
    import onnxruntime as ort

    providers = choose_providers(available_providers(), requested_providers, strict)
    if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(providers) and hasattr(ort, "preload_dlls"):
        # onnxruntime-gpu >= 1.21 finds CUDA and cuDNN installed by pip (nvidia-* wheels) only this way
        try:
            ort.preload_dlls()
        except Exception as exc:  # libraries from the system are then used, or the session says what is missing
            log.info("onnxruntime.preload_dlls() did not load CUDA libraries: %s", exc)
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
    sess = ort.InferenceSession(
        str(model_path), sess_options=opts, providers=[_with_options(p, model_path) for p in providers]
    )
    actual = list(sess.get_providers())
    choice = SessionChoice(providers, actual, intra, Path(model_path), concurrency)
    if choice.missing:
        message = (
            f"the onnxruntime session did not take {', '.join(choice.missing)}: it runs on {', '.join(actual)} "
            "(onnxruntime could not start them here; its own messages above say why)"
        )
        if strict:
            raise ValueError(f"{message}; --strict-providers does not fall back")
        log.warning("%s", message)
    return sess, choice


def _with_options(provider: str, model_path: Path) -> str | tuple[str, dict[str, str]]:
    """A provider with the options the runtime sets for it (TensorRT: a cache of built engines)."""
    if provider == "TensorrtExecutionProvider":
        # Building TensorRT engines takes seconds to minutes; keep them across restarts.
        # (onnxruntime names each engine file by a hash of its graph, so models may share the folder)
        base = Path(os.environ.get("EDGEPORT_RUNTIME_CACHE", Path(tempfile.gettempdir()) / "edgeport-runtime"))
        cache = base / "tensorrt-engines"
        cache.mkdir(parents=True, exist_ok=True)
        return provider, {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache)}
    return provider
