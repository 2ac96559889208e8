"""The deploy request, checked: what one generation of a service is built from.

A request names models, a target, an optional inference part (entry script and its uploaded
source files) and a deployment config. Everything is checked here, before any model is
resolved or anything stored, and each refusal names the key or value that is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hub.deployconfig import parse_deployment_config
from hub.errors import BadInput
from hub.names import ModelRef, parse_target

SPEC_KEYS = frozenset({"name", "models", "target", "inference", "deployment"})
INFERENCE_KEYS = frozenset({"entry_script", "source_files", "requirements", "environment_variables", "description"})


@dataclass
class ServiceSpec:
    """A validated request for one generation."""

    models: list[ModelRef]
    target: str
    inference: dict[str, Any] | None
    deployment: dict[str, Any] = field(default_factory=dict)


def check_keys(where: str, data: Any, allowed: frozenset[str]) -> None:
    """BadInput unless `data` is a JSON object whose keys are all in `allowed` (naming the first unknown one)."""
    if not isinstance(data, dict):
        raise BadInput(f"{where}: expected a JSON object")
    for key in data:
        if key not in allowed:
            raise BadInput(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")


def validate_spec(request: dict[str, Any], select: Callable[[str], list[str]]) -> ServiceSpec:
    """Check a request's models, target (which must select some device now), deployment and inference parts."""
    models = request.get("models")
    if not isinstance(models, list) or not models:
        raise BadInput("at least one model is required (-m NAME:VERSION)")
    refs = [ModelRef.parse(m) for m in models]
    parse_target(request.get("target"))  # BadInput unless a device name or KEY=VALUE labels
    target = str(request["target"]).strip()
    if not select(target):
        raise BadInput(f"target {target!r} selects no device (see `hub device list` for labels)")
    deployment = request.get("deployment") or {}
    parse_deployment_config(deployment)
    inference = request.get("inference")
    if inference is not None:
        check_keys("inference", inference, INFERENCE_KEYS)
        if not isinstance(inference.get("entry_script"), str) or not inference["entry_script"]:
            raise BadInput("inference: entry_script is required")
    return ServiceSpec(models=refs, target=target, inference=inference, deployment=deployment)
