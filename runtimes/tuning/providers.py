"""Execution-provider choice: TensorRT → CUDA → OpenVINO → CPU, among those onnxruntime really has."""

from __future__ import annotations

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


def choose_providers(available: list[str], requested: list[str] | None = None) -> list[str]:
    """Providers to ask the session for, best first.

    With `requested` (the --execution-providers list) only those are kept, in the caller's order; a
    requested provider that is not available raises ValueError naming it. CPU is always last, as the
    fallback onnxruntime needs for operators an accelerator lacks.
    """
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise ValueError(
                f"execution provider(s) not available here: {', '.join(missing)} (available: {', '.join(available)})"
            )
        chosen = list(requested)
    else:
        chosen = [p for p in PREFERENCE if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen
