"""Telemetry points: the agent's own figures (CPU, RSS) and each runtime's /metrics statistics.

Runtime statistics come from the Prometheus text the runtime serves on GET /metrics:
requests and errors are the totals of the `*requests_total` / `*errors_total` counters (or
requests with a 4xx/5xx status label), latency p50/p99 are estimated from the buckets of the
first `*latency*`/`*duration*` histogram, over the interval since the previous scrape (so they
describe recent traffic, not the whole life of the process).
"""

from __future__ import annotations

import http.client
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agent.supervisor import local_tls_context
from protos.edgeport.v1 import agent_pb2

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process (VmRSS), 0 when unknown."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _process_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


# Figures of this process and machine, read at most once per PROCESS_FIGURES_TTL_S: an agent asks every
# telemetry interval, but a simulated fleet's thousands of agents in one process would each read the same
# /proc files (two opens and reads per agent per interval).
PROCESS_FIGURES_TTL_S = 1.0
_figures: dict[str, tuple[float, Any]] = {}
T = TypeVar("T")


def _cached(key: str, read: Callable[[], T]) -> T:
    now = time.monotonic()
    hit = _figures.get(key)
    if hit is not None and now - hit[0] < PROCESS_FIGURES_TTL_S:
        return hit[1]
    value = read()
    _figures[key] = (now, value)
    return value


def _read_system_cpu() -> tuple[float, float]:
    try:
        with open("/proc/stat") as fh:
            fields = [float(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


def _system_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot (read at most once a second per process)."""
    return _cached("system_cpu", _read_system_cpu)


def _own_rss() -> int:
    return _cached("rss", rss_bytes)


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) for every sample line of a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        out.append((m.group(1), labels, value))
    return out


@dataclass
class RuntimeStats:
    """What one scrape of a runtime's /metrics says."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count


# Traffic that is not scoring: health probes (the agent's own), metrics scrapes, documents.
_HOUSEKEEPING = {"health", "metrics", "docs", "metadata", "/", "/metrics"}


def runtime_stats(samples: list[tuple[str, dict[str, str], float]]) -> RuntimeStats:
    """Scoring requests, errors and the latency histogram from parsed samples (housekeeping endpoints left out)."""
    stats = RuntimeStats()
    histogram: str | None = None
    status_errors, counted_errors, has_error_counter = 0.0, 0.0, False
    for name, labels, value in samples:
        if labels.get("endpoint", labels.get("handler", "")) in _HOUSEKEEPING:
            continue
        status = labels.get("code") or labels.get("status") or labels.get("status_code") or ""
        if name.endswith("requests_total"):
            stats.requests += value
            if status[:1] in ("4", "5"):
                status_errors += value
        elif name.endswith("errors_total"):
            has_error_counter = True
            counted_errors += value
        elif name.endswith("_bucket") and "le" in labels and ("latency" in name or "duration" in name):
            base = name.removesuffix("_bucket")
            histogram = histogram or base
            if base == histogram:
                le = float("inf") if labels["le"] in ("+Inf", "Inf") else float(labels["le"])
                stats.buckets[le] = stats.buckets.get(le, 0.0) + value
    stats.errors = counted_errors if has_error_counter else status_errors  # never both: no double counting
    return stats


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """The q-quantile estimated from cumulative histogram buckets (linear inside a bucket); None if empty."""
    if not buckets:
        return None
    edges = sorted(buckets)
    total = buckets[edges[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_edge, prev_count = 0.0, 0.0
    for edge in edges:
        count = buckets[edge]
        if count >= rank:
            if edge == float("inf"):
                return prev_edge
            span = count - prev_count
            return prev_edge + (edge - prev_edge) * ((rank - prev_count) / span if span else 1.0)
        prev_edge, prev_count = edge, count
    return prev_edge


# Ports whose runtime serves HTTPS only (it answers plain HTTP with 400): scraped over TLS from then on.
_TLS_PORTS: set[int] = set()


def scrape(port: int, host: str = "127.0.0.1", timeout: float = 3.0) -> RuntimeStats | None:
    """One GET /metrics of a runtime (None when it does not answer), over TLS when it serves HTTPS."""
    for tls in (True, False) if port in _TLS_PORTS else (False, True):
        conn = (
            http.client.HTTPSConnection(host, port, timeout=timeout, context=local_tls_context())
            if tls
            else http.client.HTTPConnection(host, port, timeout=timeout)
        )
        try:
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            body = resp.read(4 * 1024 * 1024).decode(errors="replace")
        except (OSError, http.client.HTTPException):
            if tls:
                continue  # the port may serve plain HTTP again (a new generation)
            return None
        finally:
            conn.close()
        if resp.status == 400 and not tls and "HTTPS" in body:
            continue  # "this port serves HTTPS": ask again over TLS
        if resp.status != 200:
            return None
        (_TLS_PORTS.add if tls else _TLS_PORTS.discard)(port)
        return runtime_stats(parse_prometheus(body))
    return None


class TelemetryCollector:
    """Builds TelemetryPoints: system figures every call, plus per-runtime deltas since the previous scrape."""

    def __init__(
        self,
        scrape: Callable[[int], RuntimeStats | None] = scrape,
        rss: Callable[[int], int] = rss_bytes,
    ) -> None:
        self._last_cpu = (time.monotonic(), _process_cpu_seconds(), *_system_cpu())
        self._last_stats: dict[str, RuntimeStats] = {}
        self._scrape = scrape  # GET /metrics of the runtime on a port (a simulated fleet shares one)
        self._rss = rss

    def system_points(self) -> list[agent_pb2.TelemetryPoint]:
        """Agent RSS, agent CPU % (of one core) and device CPU % since the previous call."""
        now_ms = int(time.time() * 1000)
        mono, proc = time.monotonic(), _process_cpu_seconds()
        busy, total = _system_cpu()
        last_mono, last_proc, last_busy, last_total = self._last_cpu
        self._last_cpu = (mono, proc, busy, total)
        agent_cpu = 100.0 * (proc - last_proc) / max(mono - last_mono, 1e-6)
        device_cpu = 100.0 * (busy - last_busy) / (total - last_total) if total > last_total else 0.0
        return [
            agent_pb2.TelemetryPoint(at_ms=now_ms, metric="agent.rss_bytes", value=float(_own_rss())),
            agent_pb2.TelemetryPoint(at_ms=now_ms, metric="agent.cpu_percent", value=round(agent_cpu, 2)),
            agent_pb2.TelemetryPoint(at_ms=now_ms, metric="device.cpu_percent", value=round(device_cpu, 2)),
        ]

    def runtime_points(self, service: str, port: int, pid: int = 0) -> list[agent_pb2.TelemetryPoint]:
        """requests/errors totals and recent latency p50/p99 of one runtime, plus its RSS."""
        now_ms = int(time.time() * 1000)
        points = []
        if pid:
            points.append(agent_pb2.TelemetryPoint(at_ms=now_ms, metric="runtime.rss_bytes",
                                                   value=float(self._rss(pid)), service=service))  # fmt: skip
        stats = self._scrape(port)
        if stats is None:
            return points
        prev = self._last_stats.get(service)
        self._last_stats[service] = stats
        points += [
            agent_pb2.TelemetryPoint(at_ms=now_ms, metric="runtime.requests_total", value=stats.requests,
                                     service=service),
            agent_pb2.TelemetryPoint(at_ms=now_ms, metric="runtime.errors_total", value=stats.errors, service=service),
        ]  # fmt: skip
        window = stats.buckets
        if prev is not None and prev.buckets and stats.requests >= prev.requests:  # same process: diff the buckets
            window = {le: c - prev.buckets.get(le, 0.0) for le, c in stats.buckets.items()}
        for q, metric in ((0.5, "runtime.latency_p50_ms"), (0.99, "runtime.latency_p99_ms")):
            value = quantile(window, q)
            if value is not None:
                # Prometheus convention is seconds; a bound above 100 means the runtime already used ms.
                ms = value * 1000.0 if max((b for b in window if b != float("inf")), default=0) <= 100 else value
                points.append(agent_pb2.TelemetryPoint(at_ms=now_ms, metric=metric, value=round(ms, 3),
                                                       service=service))  # fmt: skip
        return points

    def forget(self, service: str) -> None:
        """Drop a removed service's previous scrape."""
        self._last_stats.pop(service, None)
