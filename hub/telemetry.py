"""TelemetryService: ingest agents' batches, keep them for a retention period (default 7 days), answer queries."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format

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
        if time.monotonic() - self._pruned_at > _PRUNE_EVERY_S:
            self.prune()
        return len(rows)

    def record_profile(self, device: str, result: agent_pb2.ProfileResult) -> None:
        """Keep a profiling result from a device."""
        self.store.put_profile(device, result.request_id, result.service, json_format.MessageToDict(result),
                               int(time.time() * 1000))

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
