"""TelemetryService: ingest agents' batches, keep them for a retention period (default 7 days), answer queries."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format

from hub.buckets import check_window
from hub.errors import BadInput
from hub.store.telemetry import TelemetryStore
from protos.edgeport.v1 import agent_pb2

DEFAULT_RETENTION_S = 7 * 86400
_PRUNE_EVERY_S = 300.0  # pruning is a range delete on an index: cheap, but no need per batch
MAX_LIMIT = 10_000


def _labels_json(labels: Mapping[str, str]) -> str:
    # Most points carry no labels or the same few: skip building a dict and encoding it each time.
    if not labels:
        return "{}"
    return _encode_labels(tuple(sorted(labels.items())))


@functools.lru_cache(maxsize=4096)
def _encode_labels(items: tuple[tuple[str, str], ...]) -> str:
    return json.dumps(dict(items))


class TelemetryService:
    """Points in, summaries and queries out. Dedup by (device, seq) happens in the control core."""

    def __init__(self, store: TelemetryStore, *, retention_s: int = DEFAULT_RETENTION_S) -> None:
        self.store = store
        self.retention_s = retention_s
        self._pruned_at = 0.0
        self.points_ingested = 0  # stored since start (hub/metrics.py); only the ingest writer adds to it
        self.prune()

    def ingest(self, device: str, batch: agent_pb2.TelemetryBatch) -> int:
        """Store a batch's points (those inside the retention window); return how many."""
        floor = self._floor_ms()
        rows = [
            (device, p.service, p.metric, p.value, p.at_ms, _labels_json(p.labels))
            for p in batch.points
            if p.at_ms >= floor and p.metric
        ]
        if batch.dropped:
            rows.append((device, "", "agent.outbox_dropped", float(batch.dropped), int(time.time() * 1000), "{}"))
        self.store.insert(rows)
        self.points_ingested += len(rows)
        if time.monotonic() - self._pruned_at > _PRUNE_EVERY_S:
            self.prune()
        return len(rows)

    def record_profile(self, device: str, result: agent_pb2.ProfileResult) -> None:
        """Keep a profiling result from a device."""
        self.store.put_profile(device, result.request_id, result.service, json_format.MessageToDict(result),
                               int(time.time() * 1000))

    def recent_profiles(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest profiling results (device, service, result, at_ms), newest first."""
        if not 0 < limit <= MAX_LIMIT:
            raise BadInput(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        return self.store.recent_profiles(limit)

    def prune(self) -> int:
        """Delete what is older than the retention period."""
        self._pruned_at = time.monotonic()
        return self.store.delete_before(self._floor_ms())

    def _floor_ms(self) -> int:
        return int((time.time() - self.retention_s) * 1000)

    def query(
        self,
        *,
        device: str | None = None,
        service: str | None = None,
        metric: str | None = None,
        since_s: float | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Points newest first; `since_s` = how far back in seconds (default: the whole retention)."""
        if limit <= 0 or limit > MAX_LIMIT:
            raise BadInput(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        if since_s is not None and since_s <= 0:
            raise BadInput(f"since must be a positive number of seconds, got {since_s}")
        since_ms = int((time.time() - since_s) * 1000) if since_s else self._floor_ms()
        return self.store.query(device=device, service=service, metric=metric, since_ms=since_ms, limit=limit)

    def summary(self, device: str) -> dict[str, float]:
        """Latest value of each metric of a device, keyed `metric` or `service/metric`."""
        return {
            (f"{r['service']}/{r['metric']}" if r["service"] else r["metric"]): r["value"]
            for r in self.store.latest(device)
        }

    # ---- aggregated queries (charts, `hub device|service telemetry --every`) ----

    def aggregate(
        self,
        *,
        devices: list[str],
        metric: str,
        since_s: float,
        every_s: float,
        service: str | None = None,
        now_s: float | None = None,
    ) -> dict[str, Any]:
        """`metric` of `devices` in buckets of `every_s` over the last `since_s` seconds: min/avg/max per bucket.

        A metric named `*_total` is a counter: each bucket then holds its rate per second (the rise
        since the device's previous bucket, a restart's reset counted from zero), min/avg/max across
        the devices, and `sum` (e.g. a service's requests/s over all its devices). `metric` may be a
        full name (`runtime.latency_p99_ms`) or the end of one (`p99_ms`) when that names one metric.
        """
        check_window(since_s, every_s)
        now_ms = int((now_s if now_s is not None else time.time()) * 1000)
        bucket_ms = max(1, int(every_s * 1000))
        # Buckets line up on multiples of the width, so repeated polls of a chart agree on their edges.
        since_ms = (now_ms - int(since_s * 1000)) // bucket_ms * bucket_ms
        name = self.resolve_metric(devices, metric, since_ms)
        counter = name.endswith("_total")
        rows = self.store.bucket_extremes(
            devices=devices, service=service, metric=name, since_ms=since_ms, until_ms=now_ms + 1,
            bucket_ms=bucket_ms, last=counter,
        )
        buckets = _rates(rows, bucket_ms) if counter else _extremes(rows)
        return {
            "metric": name,
            "kind": "rate" if counter else "gauge",
            "unit": "per second" if counter else "",
            "service": service,
            "devices": len(devices),
            "since_ms": since_ms,
            "until_ms": now_ms,
            "every_s": bucket_ms / 1000,
            "buckets": buckets,
        }

    def resolve_metric(self, devices: list[str], metric: str, since_ms: int) -> str:
        """The full metric name `metric` stands for: itself when it has a dot, else the one name the devices
        sent (since `since_ms`) that is it or ends in `_metric` / `.metric`; BadInput naming the candidates."""
        if not metric or len(metric) > 255:
            raise BadInput("metric must be 1-255 characters, e.g. runtime.latency_p99_ms or p99_ms")
        if "." in metric:
            return metric
        known = self.store.metric_names(devices, since_ms)
        found = [m for m in known if m == metric or m.endswith(("." + metric, "_" + metric))]
        if len(found) == 1:
            return found[0]
        if not found:
            sent = ", ".join(known) if known else "nothing in that window"
            raise BadInput(f"metric {metric!r}: no metric of that name or ending in it (sent: {sent})")
        raise BadInput(f"metric {metric!r} is ambiguous: it could be {', '.join(found)}")


def _extremes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per bucket across devices: min of mins, count-weighted avg, max of maxes."""
    merged: dict[int, list[float]] = {}  # bucket -> [min, sum, max, count]
    for r in rows:
        m = merged.get(r["bucket"])
        if m is None:
            merged[r["bucket"]] = [r["min"], r["sum"], r["max"], r["count"]]
        else:
            m[0] = min(m[0], r["min"])
            m[1] += r["sum"]
            m[2] = max(m[2], r["max"])
            m[3] += r["count"]
    return [
        {"at_ms": b, "min": m[0], "avg": m[1] / m[3], "max": m[2], "count": int(m[3])}
        for b, m in sorted(merged.items())
    ]


def _rates(rows: list[dict[str, Any]], bucket_ms: int) -> list[dict[str, Any]]:
    """Per bucket: min/avg/max/sum of each series' counter rate; a series is one (device, service), and the rows
    come ordered by it, then by bucket."""
    per_bucket: dict[int, list[float]] = {}
    series: tuple[str, str] | None = None
    prev_value, prev_at = 0.0, 0
    for r in rows:
        if (r["device"], r["service"]) != series:  # a series' first bucket has nothing to rise from
            series, prev_value, prev_at = (r["device"], r["service"]), r["last"], r["last_at"]
            continue
        seconds = max(r["last_at"] - prev_at, 1) / 1000
        rise = r["last"] - prev_value
        if rise < 0:  # the counter restarted (a runtime restart): it rose from zero
            rise = r["last"]
        per_bucket.setdefault(r["bucket"], []).append(rise / seconds)
        prev_value, prev_at = r["last"], r["last_at"]
    return [
        {"at_ms": b, "min": min(v), "avg": sum(v) / len(v), "max": max(v), "sum": sum(v), "count": len(v)}
        for b, v in sorted(per_bucket.items())
    ]
