"""The bounds of a bucketed telemetry query, shared by the hub and the CLI (which checks them before any call)."""

from __future__ import annotations

from hub.errors import BadInput

MAX_BUCKETS = 2_000  # a chart is a few hundred pixels wide; more buckets than this only cost the hub


def check_window(since_s: float, every_s: float) -> None:
    """BadInput unless the window and bucket width are positive and give at most MAX_BUCKETS buckets."""
    if not since_s > 0:
        raise BadInput(f"since must be a positive number of seconds, got {since_s}")
    if not every_s >= 0.001:
        raise BadInput(f"every must be at least 0.001 s, got {every_s}")
    if since_s / every_s > MAX_BUCKETS:
        raise BadInput(
            f"since {since_s:g}s / every {every_s:g}s gives {since_s / every_s:.0f} buckets; at most {MAX_BUCKETS}:"
            " ask for a shorter window or wider buckets"
        )
