"""What the hub's access gate costs: REST calls/s with and without token checks (and the audit record).

The same hub app, on the same data dir, served by uvicorn in a child process, two ways:
  * gated: the app exactly as `hub serve` builds it (every call authenticated and authorized;
    changes and refusals written to the audit log);
  * ungated: the same app with the access middleware taken out of its middleware list. This
    variant exists only inside this script: the hub has no option that turns the check off.
Each route is driven for --seconds by --connections keep-alive connections (a small asyncio
HTTP/1.1 client, so the client costs little of the 2 cores), gated and ungated alternating for
--rounds rounds; the medians are compared.

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


def _serve(data_dir: Path, port: int, gated: bool) -> None:
    """Child process: serve the hub app (gated or not) on `port` until killed."""
    import uvicorn

    from hub.api.app import create_app
    from hub.api.auth import AccessControl

    services = HubServices.open(data_dir)
    app = create_app(services)
    if not gated:  # the benchmark's own variant: the same app without its gate
        app.user_middleware = [m for m in app.user_middleware if m.cls is not AccessControl]
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


async def _drive(port: int, method: str, path: str, body: bytes, token: str, seconds: float, conns: int) -> float:
    """Requests per second over `seconds` with `conns` keep-alive connections (every answer must be 2xx)."""
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
    return done / (time.perf_counter() - started)


def _round(data_dir: Path, gated: bool, token: str, seconds: float, conns: int) -> dict[str, float]:
    port = _free_port()
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from benchmarks.auth import _serve; " \
           f"_serve(__import__('pathlib').Path({str(data_dir)!r}), {port}, {gated})"
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
            out[f"{method} {path}"] = asyncio.run(_drive(port, method, path, body, token, seconds, conns))
        return out
    finally:
        proc.terminate()
        proc.wait(10)


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
    runs: dict[str, dict[str, list[float]]] = {"gated": {}, "ungated": {}}
    with tempfile.TemporaryDirectory(prefix="auth-bench-") as tmp:
        data_dir = Path(tmp) / "hub"
        token = _seed(data_dir)
        for _ in range(args.rounds):
            for mode in ("ungated", "gated"):
                for route, rps in _round(data_dir, mode == "gated", token, args.seconds, args.connections).items():
                    runs[mode].setdefault(route, []).append(rps)
    routes = {}
    for route in runs["gated"]:
        gated, ungated = statistics.median(runs["gated"][route]), statistics.median(runs["ungated"][route])
        slowdown = 1 - gated / ungated
        routes[route] = {
            "gated_rps": round(gated, 1),
            "ungated_rps": round(ungated, 1),
            "slowdown": round(slowdown, 4),
            "met": slowdown < TARGET_SLOWDOWN,
            "gated_runs": [round(x, 1) for x in runs["gated"][route]],
            "ungated_runs": [round(x, 1) for x in runs["ungated"][route]],
        }
        print(f"{route}: {gated:,.0f}/s with token checks, {ungated:,.0f}/s without: "
              f"{slowdown:+.1%} ({'met' if slowdown < TARGET_SLOWDOWN else 'MISSED'} < {TARGET_SLOWDOWN:.0%})")
    result = {
        "benchmark": "benchmarks/auth.py",
        "target": f"gated calls/s at most {TARGET_SLOWDOWN:.0%} below ungated",
        "method": "the hub app in a uvicorn child process on one data dir, gated (as hub serve builds it) and "
        "ungated (its access middleware removed by this script only), alternating; medians of "
        f"{args.rounds} rounds x {args.seconds:g} s per route, {args.connections} keep-alive connections",
        "cpus": os.cpu_count(),
        "routes": routes,
    }
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "auth.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
