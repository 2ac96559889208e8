"""Scoring benchmark: raw session.run, /score, V2 REST (JSON and binary) and V2 gRPC, same model, one run.

For the digits classifier (sklearn -> skl2onnx) and the SqueezeNet shipped in the onnx wheel, it
starts `python -m runtimes serve` (default settings) on free loopback ports and measures requests/s
at 1 and 16 concurrent clients with p50/p99 latency:

- raw        in-process `session.run` on the same one-row input (the compute floor, no HTTP)
- score      POST /score with {"data": <nested list>}
- v2-json    POST /v2/models/<m>/infer with JSON tensors
- v2-binary  the same with the binary tensor extension (what tritonclient sends by default)
- grpc       inference.GRPCInferenceService/ModelInfer with raw_input_contents

HTTP load comes from wrk (one thread) when installed, else from a small asyncio keep-alive client;
gRPC load from a grpc.aio client sending a pre-serialized request. Client and server share the
machine's cores, so read the figures as ratios within one run. Prints a table and writes
benchmarks/results/scoring.json.

    python benchmarks/scoring.py [--duration 5] [--models digits squeezenet] [--conns 16 1]
    python benchmarks/scoring.py --write-bodies DIR   # body files (v1, v2 JSON, v2 binary) for wrk/curl
    python benchmarks/scoring.py --json-rss 90        # peak RSS while /score parses a 90 MB JSON body
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results" / "scoring.json"

WRK_LUA = """
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/json"
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests":%d,"duration_us":%d,"errors":%d,"p50_us":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- models and bodies --------------------------------------------------------------------------------------
def build_models(root: Path) -> dict[str, Path]:
    """digits and squeezenet as `<root>/<name>/model.onnx`."""
    from simulators.models import build_digits_onnx, copy_squeezenet

    return {
        "digits": build_digits_onnx(root / "digits" / "model.onnx"),
        "squeezenet": copy_squeezenet(root / "squeezenet" / "model.onnx"),
    }


def sample_input(model: str, model_path: Path) -> tuple[str, np.ndarray]:
    """The one-row input: a real digits test row, or a fixed random image."""
    import onnxruntime as ort

    name = ort.InferenceSession(str(model_path)).get_inputs()[0].name
    if model == "digits":
        from simulators.models import digits_data

        return name, digits_data()[0][:1].copy()
    return name, np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)


def write_bodies(model: str, name: str, x: np.ndarray, out: Path) -> dict[str, Path]:
    """v1 JSON, V2 JSON and V2 binary (header + raw tensor, binary outputs) request bodies."""
    out.mkdir(parents=True, exist_ok=True)
    v1 = out / f"{model}.v1.json"
    v1.write_text(json.dumps({"data": x.tolist()}))
    v2 = out / f"{model}.v2.json"
    v2.write_text(
        json.dumps(
            {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
        )
    )
    raw = x.astype("<f4").tobytes()
    head = json.dumps(
        {
            "inputs": [
                {"name": name, "shape": list(x.shape), "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    binary = out / f"{model}.v2.bin"
    binary.write_bytes(head + raw)
    return {"score": v1, "v2-json": v2, "v2-binary": binary}


# -- load generators ----------------------------------------------------------------------------------------
def run_wrk(url: str, body: Path, conns: int, duration: float, lua: Path, content_type: str) -> dict[str, Any]:
    """One wrk measurement."""
    env = {**os.environ, "BODY_FILE": str(body), "CONTENT_TYPE": content_type}
    res = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s", "--timeout", "10s", "-s", str(lua), url],
        capture_output=True,
        text=True,
        env=env,
        timeout=duration + 60,
    )
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result: {res.stdout}{res.stderr}")
    r = json.loads(line[7:])
    return {
        "rps": r["requests"] / (r["duration_us"] / 1e6),
        "p50_ms": r["p50_us"] / 1e3,
        "p99_ms": r["p99_us"] / 1e3,
        "errors": r["errors"],
        "requests": r["requests"],
    }


async def _http_client(port: int, path: str, body: bytes, conns: int, duration: float, ctype: str) -> dict[str, Any]:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    lat: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            writer.write(head + body)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t)
            errors += not status.startswith(b"HTTP/1.1 200")
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    spent = time.perf_counter() - started
    a = np.array(lat) * 1e3
    return {
        "rps": len(a) / spent,
        "p50_ms": float(np.median(a)),
        "p99_ms": float(np.percentile(a, 99)),
        "errors": errors,
        "requests": len(a),
    }


async def _grpc_client(port: int, request: bytes, conns: int, duration: float) -> dict[str, Any]:
    import grpc

    lat: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 2**30)]
    ) as ch:
        call = ch.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        await call(request)  # warm the channel
        deadline = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                try:
                    await call(request)
                except grpc.aio.AioRpcError:
                    errors += 1
                lat.append(time.perf_counter() - t)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conns)))
        spent = time.perf_counter() - started
    a = np.array(lat) * 1e3
    return {
        "rps": len(a) / spent,
        "p50_ms": float(np.median(a)),
        "p99_ms": float(np.percentile(a, 99)),
        "errors": errors,
        "requests": len(a),
    }


def grpc_request(model: str, name: str, x: np.ndarray) -> bytes:
    """A serialized ModelInferRequest with raw_input_contents."""
    from protos.inference import message_class

    msg = message_class("ModelInferRequest")(model_name=model)
    msg.inputs.add(name=name, datatype="FP32", shape=list(x.shape))
    msg.raw_input_contents.append(x.astype("<f4").tobytes())
    return msg.SerializeToString()


def raw_floor(model_path: Path, name: str, x: np.ndarray, max_s: float = 5.0, n: int = 10000) -> dict[str, Any]:
    """In-process session.run on the one-row input (default session options, like the anchors)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    for _ in range(20):
        sess.run(None, {name: x})
    ts = []
    deadline = time.perf_counter() + max_s
    while len(ts) < n and time.perf_counter() < deadline:
        t = time.perf_counter_ns()
        sess.run(None, {name: x})
        ts.append(time.perf_counter_ns() - t)
    a = np.array(ts) / 1e6
    return {
        "rps": 1e3 / a.mean(),
        "p50_ms": float(np.median(a)),
        "p99_ms": float(np.percentile(a, 99)),
        "errors": 0,
        "requests": len(a),
    }


# -- one model ----------------------------------------------------------------------------------------------
def start_runtime(model: str, model_path: Path, log: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    """`python -m runtimes serve` with defaults on free ports; returns once GET / says Healthy."""
    port, gport = free_port(), free_port()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runtimes",
                "serve",
                "--model-dir",
                str(model_path.parent),
                "--onnx",
                model_path.name,
                "--name",
                model,
                "--port",
                str(port),
                "--grpc-port",
                str(gport),
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"runtime exited: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                if r.status == 200:
                    return proc, port, gport
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("runtime did not become healthy in 60 s")


def json_rss(megabytes: float, models: dict[str, Path], work: Path) -> dict[str, Any]:
    """Peak RSS of a fresh digits runtime (sampled with psutil every 5 ms) while it answers one /score
    whose JSON body is `megabytes` MB of short numbers ("0.5", the costliest kind for a JSON parser)."""
    import threading

    import psutil

    rows = int(megabytes * 1e6) // (64 * 4)
    row = b"[" + b",".join([b"0.5"] * 64) + b"]"
    body = b'{"data": [' + b",".join([row] * rows) + b"]}"
    proc, port, _ = start_runtime("digits", models["digits"], work / "runtime-json-rss.log")
    try:
        ps = psutil.Process(proc.pid)
        before = peak = ps.memory_info().rss
        answer: dict[str, Any] = {}

        def send() -> None:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/score", data=body, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=600) as resp:
                    answer["status"] = resp.status
                    resp.read()
            except urllib.error.HTTPError as err:
                answer["status"] = err.code

        started = time.perf_counter()
        sender = threading.Thread(target=send)
        sender.start()
        while sender.is_alive():
            peak = max(peak, ps.memory_info().rss)
            time.sleep(0.005)
        seconds = time.perf_counter() - started
        after = ps.memory_info().rss
    finally:
        proc.terminate()
        proc.wait(10)
    return {
        "body_mb": round(len(body) / 1e6, 1),
        "status": answer.get("status"),
        "rss_before_mb": round(before / 1e6),
        "rss_peak_mb": round(peak / 1e6),
        "rss_after_mb": round(after / 1e6),
        "peak_growth_x_body": round((peak - before) / len(body), 2),
        "seconds": round(seconds, 2),
    }


def bench_model(model: str, model_path: Path, args: argparse.Namespace, work: Path, lua: Path) -> list[dict[str, Any]]:
    """Every path at every concurrency for one model."""
    name, x = sample_input(model, model_path)
    bodies = write_bodies(model, name, x, work / "bodies")
    rows: list[dict[str, Any]] = []
    print(f"[{model}] raw session.run ...", file=sys.stderr, flush=True)
    rows.append({"model": model, "path": "raw", "conns": 0, **raw_floor(model_path, name, x)})
    proc, port, gport = start_runtime(model, model_path, work / f"runtime-{model}.log")
    use_wrk = shutil.which("wrk") is not None and not args.no_wrk
    try:
        targets = [
            ("score", "/score", "application/json"),
            ("v2-json", f"/v2/models/{model}/infer", "application/json"),
            ("v2-binary", f"/v2/models/{model}/infer", "application/octet-stream"),
        ]
        greq = grpc_request(model, name, x)
        for label, path, ctype in [*targets, ("grpc", "", "")]:
            for conns in args.conns:
                print(f"[{model}] {label} c={conns} ...", file=sys.stderr, flush=True)
                if label == "grpc":
                    asyncio.run(_grpc_client(gport, greq, min(conns, 16), args.warmup))
                    r = asyncio.run(_grpc_client(gport, greq, conns, args.duration))
                elif use_wrk:
                    run_wrk(f"http://127.0.0.1:{port}{path}", bodies[label], 16, args.warmup, lua, ctype)
                    r = run_wrk(f"http://127.0.0.1:{port}{path}", bodies[label], conns, args.duration, lua, ctype)
                else:
                    body = bodies[label].read_bytes()
                    asyncio.run(_http_client(port, path, body, 16, args.warmup, ctype))
                    r = asyncio.run(_http_client(port, path, body, conns, args.duration, ctype))
                rows.append({"model": model, "path": label, "conns": conns, **r})
    finally:
        proc.terminate()
        proc.wait(10)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The printed table."""
    out = [f"{'model':<11} {'path':<10} {'conns':>5} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'errors':>6}"]
    for r in rows:
        conns = "-" if r["conns"] == 0 else str(r["conns"])
        out.append(
            f"{r['model']:<11} {r['path']:<10} {conns:>5} {r['rps']:>10,.0f} {r['p50_ms']:>9.3f} "
            f"{r['p99_ms']:>9.3f} {r['errors']:>6}"
        )
    return "\n".join(out)


def main() -> int:
    """Run the benchmark; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["digits", "squeezenet"], choices=["digits", "squeezenet"])
    ap.add_argument("--conns", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (default 5)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up load before each (default 1)")
    ap.add_argument("--no-wrk", action="store_true", help="use the built-in asyncio HTTP client even if wrk exists")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--write-bodies", type=Path, metavar="DIR", help="only write the request body files to DIR")
    ap.add_argument(
        "--json-rss", type=float, metavar="MB", help="only measure peak RSS while /score parses an MB-MB JSON body"
    )
    args = ap.parse_args()
    if args.json_rss is not None and args.json_rss <= 0:
        print("error: --json-rss must be a positive number of megabytes", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="edgeport-bench-") as tmp:
        work = Path(tmp)
        models = build_models(work / "models")
        if args.write_bodies:
            for m in args.models:
                name, x = sample_input(m, models[m])
                for label, path in write_bodies(m, name, x, args.write_bodies).items():
                    print(f"{m} {label}: {path}")
            return 0
        if args.json_rss:
            result = json_rss(args.json_rss, models, work)
            print(json.dumps(result))
            out = args.out.with_name("scoring_json_rss.json")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2) + "\n")
            return 0 if result["status"] == 200 else 1
        lua = work / "post.lua"
        lua.write_text(WRK_LUA)
        rows: list[dict[str, Any]] = []
        for m in args.models:
            rows += bench_model(m, models[m], args, work, lua)
    text = table(rows)
    print(text)
    import onnxruntime

    from runtimes import __version__

    doc = {
        "rows": rows,
        "table": text,
        "config": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "conns": args.conns,
            "http_client": "wrk -t1" if shutil.which("wrk") and not args.no_wrk else "asyncio",
            "grpc_client": "grpc.aio, pre-serialized request",
        },
        "versions": {
            "edgeport-runtime": __version__,
            "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(),
        },
        "host": {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
