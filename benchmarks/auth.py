"""What the hub's access gate costs: REST calls/s with and without token checks (and the audit record).

The same hub app, on the same data dir, served by uvicorn in a child process, three ways:
  * gated: the app exactly as `hub serve` builds it (every call authenticated and authorized;
    changes and refusals written to the audit log before the answer);
  * checks only: gated, but the audit write replaced by nothing, to tell the token check's cost
    from the audit record's on calls that change something;
  * ungated: the same app with the access middleware taken out of its middleware list.
The last two exist only inside this script: the hub has no option that turns either off.
Each route is driven for --seconds by --connections keep-alive connections (a small asyncio
HTTP/1.1 client, so the client costs little of the 2 cores), the variants alternating for
--rounds rounds; the medians are compared. On a shared machine calls/s swing by ±20 % from run to
run, so the hub process's CPU time per call (user + system, from /proc) is measured too and the
calls/s one core sustains is 1 / (CPU per call). Last, the gate alone is timed in process in front of
an endpoint that does nothing, which no other load can blur; the target is judged on that time as a
share of the hub's CPU per call without the gate.

Routes: GET /api/v1/models (a registry read), GET /v2/models/digits/manifests/1 (an OCI pull),
PUT /api/v1/blobs/DIGEST of a stored blob (a change: it also writes an audit record).

    python benchmarks/auth.py                       # writes benchmarks/results/auth.json
    python benchmarks/auth.py --seconds 2 --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hub.services import HubServices  # noqa: E402
from tests.unit.enrollment import enroll  # noqa: E402

BLOB = b"model bytes"
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
ROUTES = (
    ("GET", "/api/v1/models", b""),
    ("GET", "/v2/models/digits/manifests/1", b""),
    # a change (an upload of a blob the hub already has: safe to repeat from 8 connections at once)
    ("PUT", "/api/v1/blobs/" + BLOB_DIGEST, BLOB),
)
TARGET_SLOWDOWN = 0.05


def _serve(data_dir: Path, port: int, mode: str) -> None:
    """Child process: serve the hub app as `mode` (gated, checks-only, ungated) on `port` until killed."""
    import uvicorn

    from hub.api.app import create_app
    from hub.api.auth import AccessControl

    if len(os.sched_getaffinity(0)) > 1:  # the hub on one core, the client on the others: less noise
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    services = HubServices.open(data_dir)
    app = create_app(services)
    if mode == "ungated":  # the benchmark's own variant: the same app without its gate
        app.user_middleware = [m for m in app.user_middleware if m.cls is not AccessControl]
    elif mode == "checks-only":  # the benchmark's own variant: checks, but no audit record

        async def no_record(self: AccessControl, *args: object) -> None:
            return None

        AccessControl.write = no_record  # type: ignore[method-assign,assignment]
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, loop="uvloop")


def _seed(data_dir: Path) -> str:
    """A model, a device and a key-auth service to call; an admin token (returned)."""
    hub = HubServices.open(data_dir)
    try:
        enroll(hub, "dev-1", ["site=bench"])
        digest = hub.blobs.put_bytes(BLOB)
        hub.registry.register("digits", [{"path": "model.onnx", "digest": digest, "size": len(BLOB)}])
        hub.deployments.create(
            {"name": "svc", "models": ["digits:1"], "target": "dev-1", "deployment": {"authEnabled": True}}
        )
        return str(hub.access.create_token("bench", "admin")["token"])
    finally:
        hub.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _drive(
    port: int, method: str, path: str, body: bytes, token: str, seconds: float, conns: int
) -> tuple[float, int]:
    """(requests per second, requests) over `seconds` with `conns` keep-alive connections (all must be 2xx)."""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    request = head + body
    done = 0
    stop = time.perf_counter() + seconds

    async def one() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop:
                writer.write(request)
                status_line = await reader.readline()
                if not status_line.split(b" ")[1].startswith(b"2"):
                    raise RuntimeError(f"{method} {path}: {status_line!r}")
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                done += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(conns)))
    return done / (time.perf_counter() - started), done


def _round(data_dir: Path, mode: str, token: str, seconds: float, conns: int) -> dict[str, tuple[float, float]]:
    """{route: (calls/s, hub CPU microseconds per call)} for one hub process serving as `mode`."""
    port = _free_port()
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from benchmarks.auth import _serve; " \
           f"_serve(__import__('pathlib').Path({str(data_dir)!r}), {port}, {mode!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the benchmark's hub did not start") from None
                time.sleep(0.1)
        out = {}
        for method, path, body in ROUTES:
            asyncio.run(_drive(port, method, path, body, token, 0.5, conns))  # warm up
            cpu = _cpu_s(proc.pid)
            rps, calls = asyncio.run(_drive(port, method, path, body, token, seconds, conns))
            out[f"{method} {path}"] = (rps, (_cpu_s(proc.pid) - cpu) / calls * 1e6)
        return out
    finally:
        proc.terminate()
        proc.wait(10)


def _gate_alone(data_dir: Path, token: str, calls: int = 5000) -> dict[str, float]:
    """Microseconds the access gate adds per call, in process, in front of an endpoint that does nothing."""
    from hub.api.app import ROUTER_MODULES, create_app
    from hub.api.auth import AccessControl

    services = HubServices.open(data_dir)
    try:
        app = create_app(services)
        routes = [r for r in app.router.routes if hasattr(r, "path")]
        routes += [r for module in ROUTER_MODULES for r in module.router.routes]

        async def endpoint(scope: dict, receive: object, send: object) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
            await send({"type": "http.response.body", "body": b"{}"})  # type: ignore[operator]

        gate = AccessControl(endpoint, services.access, routes)  # type: ignore[arg-type]
        headers = [(b"authorization", f"Bearer {token}".encode())]

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            return None

        async def per_call(app_: object, method: str, path: str, n: int) -> float:
            started = time.perf_counter()
            for _ in range(n):
                scope = {"type": "http", "method": method, "path": path, "headers": headers,
                         "client": ("127.0.0.1", 1), "query_string": b"", "root_path": ""}  # fmt: skip
                await app_(scope, receive, send)  # type: ignore[operator]
            return (time.perf_counter() - started) / n * 1e6

        async def measure() -> dict[str, float]:
            put = ROUTES[2][1]
            bare = await per_call(endpoint, "GET", "/api/v1/models", calls)
            out = {
                "read": await per_call(gate, "GET", "/api/v1/models", calls) - bare,
                "change_with_audit_record_alone": await per_call(gate, "PUT", put, calls // 5) - bare,
            }

            async def no_record(*args: object) -> None:
                return None

            gate.write = no_record  # type: ignore[method-assign,assignment]
            out["change_check_only"] = await per_call(gate, "PUT", put, calls) - bare
            return {k: round(v, 1) for k, v in out.items()}

        return asyncio.run(measure())
    finally:
        services.close()


def main(argv: list[str] | None = None) -> int:
    """Alternate gated and ungated rounds; print and write benchmarks/results/auth.json."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="per route and round (default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="gated/ungated pairs (default 3)")
    ap.add_argument("--connections", type=int, default=8, help="keep-alive connections (default 8)")
    args = ap.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1 or args.connections < 1:
        print("error: --seconds, --rounds and --connections must be positive", file=sys.stderr)
        return 2
    cores = os.sched_getaffinity(0)
    if len(cores) > 1:  # the client off the core the hub is pinned to
        os.sched_setaffinity(0, cores - {max(cores)})
    modes = ("ungated", "checks-only", "gated")
    runs: dict[str, dict[str, list[tuple[float, float]]]] = {mode: {} for mode in modes}
    with tempfile.TemporaryDirectory(prefix="auth-bench-") as tmp:
        data_dir = Path(tmp) / "hub"
        token = _seed(data_dir)
        for _ in range(args.rounds):
            for mode in modes:
                for route, figures in _round(data_dir, mode, token, args.seconds, args.connections).items():
                    runs[mode].setdefault(route, []).append(figures)
        gate_us = _gate_alone(data_dir, token)
    routes = {}
    for (method, _, _), route in zip(ROUTES, runs["gated"], strict=True):
        rps = {mode: statistics.median(r for r, _ in runs[mode][route]) for mode in modes}
        cpu_us = {mode: statistics.median(c for _, c in runs[mode][route]) for mode in modes}
        check_cost = 1 - cpu_us["ungated"] / cpu_us["checks-only"]  # capacity lost to the token check alone
        slowdown = 1 - cpu_us["ungated"] / cpu_us["gated"]  # ... to the check and the audit record
        gate = gate_us["read"] if method == "GET" else gate_us["change_check_only"]
        gate_share = gate / (cpu_us["ungated"] + gate)  # capacity the gate takes, from its own timing
        routes[route] = {
            "calls_per_s": {mode: round(rps[mode], 1) for mode in modes},
            "hub_cpu_us_per_call": {mode: round(cpu_us[mode], 1) for mode in modes},
            "token_check_slowdown_end_to_end": round(check_cost, 4),
            "slowdown_with_audit_end_to_end": round(slowdown, 4),
            "token_check_slowdown_from_gate_time": round(gate_share, 4),
            "met": gate_share < TARGET_SLOWDOWN,
            "runs": {mode: [[round(r, 1), round(c, 1)] for r, c in runs[mode][route]] for mode in modes},
        }
        print(f"{route}: the gate's {gate:.1f} us is {gate_share:.1%} of the call "
              f"({'met' if gate_share < TARGET_SLOWDOWN else 'MISSED'} < {TARGET_SLOWDOWN:.0%}); end to end, hub CPU "
              f"per call {cpu_us['ungated']:.0f} us without token checks, "
              f"{cpu_us['checks-only']:.0f} us with them ({check_cost:+.1%}), "
              f"{cpu_us['gated']:.0f} us with the audit record too ({slowdown:+.1%}); calls/s "
              f"{rps['ungated']:,.0f} / {rps['checks-only']:,.0f} / {rps['gated']:,.0f}")
    print(f"the gate alone, in process: {gate_us['read']:.1f} us per read, {gate_us['change_check_only']:.1f} us per "
          f"change, {gate_us['change_with_audit_record_alone']:.0f} us per change with its audit record when no "
          "other call shares the commit")
    result = {
        "benchmark": "benchmarks/auth.py",
        "target": f"calls/s with token checks at most {TARGET_SLOWDOWN:.0%} below without (judged on the gate's own "
        "time per call against the hub's CPU per call: end-to-end figures on a shared machine swing more than that)",
        "method": "the hub app in a uvicorn child process on one data dir: gated (as hub serve builds it), "
        "checks-only (audit write replaced by nothing) and ungated (access middleware removed), both by this "
        "script only, alternating; medians of "
        f"{args.rounds} rounds x {args.seconds:g} s per route, {args.connections} keep-alive connections",
        "cpus": os.cpu_count(),
        "routes": routes,
        "gate_alone_us_per_call": gate_us,
    }
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "auth.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
