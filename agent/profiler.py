"""ProfileRequest: a short, bounded load test of one local runtime, answered with a ProfileResult."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor

from agent.state import ServiceRecord
from agent.supervisor import local_tls_context
from protos.edgeport.v1 import agent_pb2

MAX_REQUESTS = 2000
MAX_CONCURRENCY = 16
MAX_SECONDS = 60.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def profile_service(
    rec: ServiceRecord | None, request: agent_pb2.ProfileRequest, host: str = "127.0.0.1"
) -> agent_pb2.ProfileResult:
    """POST the request's payload to the service's /score `requests` times (bounded); rps and p50/p99 in ms."""
    result = agent_pb2.ProfileResult(request_id=request.request_id, service=request.service)
    if rec is None or not rec.port:
        result.message = f"service {request.service} does not run on this device"
        return result
    count = max(1, min(request.requests or 100, MAX_REQUESTS))
    concurrency = max(1, min(request.concurrency or 1, MAX_CONCURRENCY))
    headers = {"Content-Type": "application/json"}
    if rec.manifest is not None and rec.manifest.auth.mode == "key" and rec.manifest.auth.primary_key:
        headers["Authorization"] = f"Bearer {rec.manifest.auth.primary_key}"
    elif rec.manifest is not None and rec.manifest.auth.mode == "token" and rec.manifest.auth.token_secret:
        headers["Authorization"] = f"Bearer {_token(rec.manifest.auth.token_secret, rec.name, MAX_SECONDS + 60)}"
    tls = rec.manifest is not None and rec.manifest.tls.enabled
    deadline = time.monotonic() + MAX_SECONDS
    target = "127.0.0.1" if host in ("0.0.0.0", "") else host

    def one(_: int) -> tuple[float, int]:
        if time.monotonic() > deadline:
            return 0.0, -1
        conn = (
            http.client.HTTPSConnection(target, rec.port, timeout=30, context=local_tls_context())
            if tls
            else http.client.HTTPConnection(target, rec.port, timeout=30)
        )
        start = time.perf_counter()
        try:
            conn.request("POST", "/score", body=request.payload, headers=headers)
            resp = conn.getresponse()
            resp.read()
            return (time.perf_counter() - start) * 1000.0, resp.status
        except (OSError, http.client.HTTPException):
            return (time.perf_counter() - start) * 1000.0, 0
        finally:
            conn.close()

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        outcomes = [o for o in pool.map(one, range(count)) if o[1] != -1]
    elapsed = time.perf_counter() - began
    ok = [ms for ms, status in outcomes if status == 200]
    result.rps = len(ok) / elapsed if elapsed > 0 else 0.0
    result.p50_ms = _percentile(ok, 0.5)
    result.p99_ms = _percentile(ok, 0.99)
    failed = len(outcomes) - len(ok)
    result.message = f"{len(ok)} ok, {failed} failed of {len(outcomes)} requests at concurrency {concurrency}"
    return result


def _token(secret: str, service: str, ttl_s: float) -> str:
    """A scoring token as the runtime's token mode checks it (runtimes/README.md, "Auth tokens")."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    payload = b64(json.dumps({"service": service, "exp": int(time.time() + ttl_s)}, separators=(",", ":")).encode())
    return f"{payload}.{b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())}"
