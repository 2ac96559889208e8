"""`--every`: telemetry in time buckets (min/avg/max) for `hub device telemetry` and `hub service telemetry`."""

from __future__ import annotations

import argparse
import time
from typing import Any
from urllib.parse import quote

from hub.buckets import check_window
from hub.cli.output import print_json, print_table
from hub.client import HubClient
from hub.errors import BadInput
from hub.names import parse_duration

DEFAULT_SINCE = "1h"


def aggregate(args: argparse.Namespace, scope: str, name: str, *, service: str | None = None) -> dict[str, Any]:
    """GET the bucketed query of `scope` ("devices" or "services") NAME from the hub; BadInput for a bad window."""
    if not args.metric:
        raise BadInput("--every needs --metric (e.g. --metric p99_ms or --metric runtime.requests_total)")
    since_s = parse_duration(args.since or DEFAULT_SINCE)
    every_s = parse_duration(args.every)
    check_window(since_s, every_s)  # before any network: a clear error even with no hub running
    params: dict[str, Any] = {"metric": args.metric, "since": since_s, "every": every_s}
    if service:
        params["service"] = service
    with HubClient(getattr(args, "hub", None)) as client:
        response = client.request("GET", f"/api/v1/{scope}/{quote(name)}/telemetry/aggregate", params=params)
        return dict(response.json())


def print_aggregate(args: argparse.Namespace, result: dict[str, Any]) -> int:
    """One row per bucket (oldest first), or the whole answer as JSON."""
    if args.output == "json":
        print_json(result)
        return 0
    rate = result["kind"] == "rate"
    unit = " (per second)" if rate else ""
    print(f"{result['metric']}{unit}, {result['every_s']:g}s buckets, {result['devices']} device(s)")
    headers = ["AT", "MIN", "AVG", "MAX", *(["SUM"] if rate else []), "POINTS" if not rate else "SERIES"]
    rows = [
        (
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(b["at_ms"] / 1000)),
            f"{b['min']:.6g}",
            f"{b['avg']:.6g}",
            f"{b['max']:.6g}",
            *([f"{b['sum']:.6g}"] if rate else []),
            b["count"],
        )
        for b in result["buckets"]
    ]
    print_table(rows, headers)
    return 0
