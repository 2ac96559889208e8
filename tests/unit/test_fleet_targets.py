"""benchmarks/fleet_targets.py: the fleet benchmark holds each 10,000-agent run against its targets."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from tests.support import REPO


@pytest.fixture(scope="module")
def targets() -> Iterator[ModuleType]:
    # benchmarks/ is a folder of scripts, not a package: load the module from its file
    spec = importlib.util.spec_from_file_location("fleet_targets", REPO / "benchmarks" / "fleet_targets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _run(size: int, transport: str, **figures: Any) -> dict[str, Any]:
    run: dict[str, Any] = {"size": size, "transport": transport, "deploy_s": None, "hub_peak_mib": None,
                           "points_per_s": None, "notes": []}  # fmt: skip
    run.update(figures)
    return run


def _by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(row["transport"], row["what"]): row for row in rows}


def test_each_transport_is_held_against_its_own_targets(targets: ModuleType) -> None:
    rows = targets.verdicts(
        [
            _run(10_000, "grpc", deploy_s=9.2, hub_peak_mib=1131.0, points_per_s=54_272.0),
            _run(10_000, "mqtt", deploy_s=25.9, hub_peak_mib=170.0, points_per_s=49_999.0),
        ]
    )
    got = {key: (row["measured"], row["met"]) for key, row in _by_key(rows).items()}
    assert got == {
        ("grpc", "deploy -> all Healthy"): (9.2, True),
        ("grpc", "hub peak RSS"): (1131.0, False),  # 600 MiB for gRPC
        ("grpc", "telemetry stored"): (54_272.0, True),
        ("mqtt", "deploy -> all Healthy"): (25.9, False),
        ("mqtt", "hub peak RSS"): (170.0, True),  # 200 MiB for MQTT
        ("mqtt", "telemetry stored"): (49_999.0, False),  # at least 50,000
    }
    assert _by_key(rows)[("grpc", "hub peak RSS")]["target"] == "<= 600 MiB"
    json.dumps(rows)  # stored in fleet.json as is


def test_limits_are_inclusive(targets: ModuleType) -> None:
    rows = targets.verdicts([_run(10_000, "mqtt", deploy_s=10.0, hub_peak_mib=200.0, points_per_s=50_000.0)])
    assert all(row["met"] for row in rows) and len(rows) == 3


def test_other_sizes_have_no_verdict(targets: ModuleType) -> None:
    runs = [_run(100, "grpc", deploy_s=1.0), _run(1_000, "mqtt", deploy_s=2.0)]
    assert targets.verdicts(runs) == []
    assert targets.format_verdicts([]) == []


def test_a_failed_or_unmeasured_run_misses(targets: ModuleType) -> None:
    failed = _run(10_000, "grpc", deploy_s=5.0, hub_peak_mib=100.0, points_per_s=90_000.0, notes=["timed out"])
    unmeasured = _run(10_000, "mqtt", deploy_s=float("nan"))
    rows = targets.verdicts([failed, unmeasured])
    assert rows and not any(row["met"] for row in rows)
    assert _by_key(rows)[("mqtt", "deploy -> all Healthy")]["measured"] is None
    lines = targets.format_verdicts(rows)
    assert lines[0].startswith("targets at 10,000 agents")
    assert any("no figure" in line and "MISSED" in line for line in lines[1:])
    assert len(lines) == 1 + len(rows)
