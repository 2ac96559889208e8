"""Execution-provider choice: TensorRT → CUDA → OpenVINO → CPU, among those onnxruntime really has."""

from __future__ import annotations

import logging

log = logging.getLogger("runtimes.tuning")

PREFERENCE = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "OpenVINOExecutionProvider",
    "CPUExecutionProvider",
)


def available_providers() -> list[str]:
    """Providers compiled into the installed onnxruntime (what `python -m runtimes providers` prints)."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def choose_providers(available: list[str], requested: list[str] | None = None, strict: bool = False) -> list[str]:
    """Providers to ask the session for, best first.

    With `requested` (the --execution-providers list) only those are kept, in the caller's order;
    requested providers this onnxruntime lacks are dropped with a warning (the agent may ask for
    what the device's hardware suggests; serving on CPU beats not serving), or with `strict`
    (--strict-providers) refused with ValueError. CPU is always last, as the fallback onnxruntime
    needs for operators an accelerator lacks.
    """
    if requested:
        missing = [p for p in requested if p not in available]
        if missing and strict:
            raise ValueError(
                f"execution provider(s) {', '.join(missing)} not in this onnxruntime (it has "
                f"{', '.join(available)}); --strict-providers does not fall back"
            )
        if missing:
            log.warning(
                "execution provider(s) not available here: %s (available: %s); using the rest",
                ", ".join(missing),
                ", ".join(available),
            )
        chosen = [p for p in requested if p in available]
    else:
        chosen = [p for p in PREFERENCE if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen
