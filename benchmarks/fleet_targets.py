"""The fleet benchmark's targets (at 10,000 agents) and the verdict on one run's results.

Kept apart from `fleet.py` so the verdict can be tested without starting a fleet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

TARGET_SIZE = 10_000  # the targets are set for a fleet of this many agents


@dataclass(frozen=True, slots=True)
class Target:
    """One figure of a run held against a limit."""

    what: str
    field: str  # the result's key (benchmarks/fleet.py's Result)
    limit: float
    at_most: bool  # True: the figure must be <= limit; False: >= limit
    unit: str
    transport: str | None = None  # None: both transports

    def describe(self) -> str:
        """E.g. '<= 10 s' or '>= 50,000 points/s'."""
        return f"{'<=' if self.at_most else '>='} {self.limit:,.0f} {self.unit}"


TARGETS: tuple[Target, ...] = (
    Target("deploy -> all Healthy", "deploy_s", 10.0, True, "s"),
    Target("hub peak RSS", "hub_peak_mib", 600, True, "MiB", "grpc"),
    Target("hub peak RSS", "hub_peak_mib", 200, True, "MiB", "mqtt"),
    Target("telemetry stored", "points_per_s", 50_000, False, "points/s"),
)


def verdicts(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target against each run of `TARGET_SIZE` agents: what was measured and whether it was met.

    A run that failed (notes set) or has no figure counts as missed, with `measured` None.
    """
    out: list[dict[str, Any]] = []
    for run in runs:
        if run["size"] != TARGET_SIZE:
            continue
        for target in TARGETS:
            if target.transport not in (None, run["transport"]):
                continue
            value = run.get(target.field)
            measured = None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
            met = (
                measured is not None
                and not run.get("notes")
                and (measured <= target.limit if target.at_most else measured >= target.limit)
            )
            out.append(
                {
                    "transport": run["transport"],
                    "what": target.what,
                    "target": target.describe(),
                    "measured": measured,
                    "unit": target.unit,
                    "met": met,
                }
            )
    return out


def format_verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """The lines the benchmark prints under its table (none when no run had `TARGET_SIZE` agents)."""
    if not rows:
        return []
    lines = [
        f"targets at {TARGET_SIZE:,} agents (set for a 2-core machine as fast as the one its floors were "
        "measured on, so a slower machine misses the time targets by its slowness too):"
    ]
    for row in rows:
        digits = 1 if row["unit"] == "s" else 0
        measured = "no figure" if row["measured"] is None else f"{row['measured']:,.{digits}f} {row['unit']}"
        lines.append(
            f"  {row['transport']:<5} {row['what']:<22} {row['target']:<20} {measured:<22} "
            f"{'met' if row['met'] else 'MISSED'}"
        )
    return lines
