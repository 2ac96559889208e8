#!/usr/bin/env bash
# GPU check: serve SqueezeNet with the CPU, CUDA and TensorRT execution providers in turn and print
# req/s and p50/p99 latency for each, in one run; providers this machine cannot run are reported as
# skipped with the reason. Writes the figures as JSON to $OUT/gpu_check.json when $OUT is set, else
# to benchmarks/results/gpu_check.json.
#
#   benchmarks/gpu_check.sh                     # from anywhere; runs in the repository root
#   COUNT=4000 CONCURRENCY=16 benchmarks/gpu_check.sh
#   PYTHON=/path/to/venv/bin/python benchmarks/gpu_check.sh
#   GPU_CHECK_BUILD_MODEL=1 benchmarks/gpu_check.sh   # the built conv net even where SqueezeNet is bundled
#
# Each runtime's log lands beside the JSON (gpu_check-CPU.log, -CUDA.log, -TensorRT.log).
#
# What it needs: the runtime's own packages (numpy, orjson, httptools, grpcio, onnxruntime; onnx
# for the model). On a machine with an NVIDIA GPU whose onnxruntime lacks CUDAExecutionProvider it
# installs onnxruntime-gpu (with pip's CUDA and cuDNN libraries, and TensorRT's when it can) into
# a virtual environment layered over the current one -- only if a package index answers; the
# installed onnxruntime is never replaced. Otherwise it uses what is installed and says which
# providers that gives. It never downloads a model: SqueezeNet comes from the onnx wheel's bundled
# test data, or a small conv net is built with onnx.helper.
#
# Each provider gets its own `python -m runtimes serve --execution-providers P,...,CPU
# --strict-providers` (so a session that falls back to CPU fails instead of being measured as GPU),
# checked through /v2/models/<m> (the session's real providers), then COUNT one-image requests
# (V2 REST, binary tensor extension) over CONCURRENCY keep-alive connections after a warm-up.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
COUNT=${COUNT:-2000}
CONCURRENCY=${CONCURRENCY:-8}
WARMUP=${WARMUP:-200}
READY_TIMEOUT=${READY_TIMEOUT:-900}  # TensorRT builds its engine before the first answer
RESULTS_DIR=${OUT:-benchmarks/results}
mkdir -p "$RESULTS_DIR"

say() { printf '[gpu_check] %s\n' "$*" >&2; }

have_gpu() {
  { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; } || [ -e /dev/nvidia0 ]
}

has_cuda_provider() {
  "$1" -c 'import onnxruntime as o, sys; sys.exit(0 if "CUDAExecutionProvider" in o.get_available_providers() else 1)' \
    >/dev/null 2>&1
}

index_reachable() {
  timeout 30 "$1" -m pip index versions onnxruntime-gpu 2>/dev/null | grep -q "Available versions"
}

if ! "$PY" -c 'import numpy, orjson, httptools, grpc, onnxruntime' 2>/dev/null; then
  missing=$("$PY" -c 'import importlib.util as u; print(" ".join(m for m in ("numpy","orjson","httptools","grpc","onnxruntime","onnx") if not u.find_spec(m)))' 2>/dev/null || echo "python")
  say "the runtime's packages are missing for $PY: $missing"
  if index_reachable "$PY"; then
    say "installing them from the package index"
    "$PY" -m pip install -q numpy orjson httptools uvloop grpcio "protobuf>=6.33,<7" onnxruntime onnx psutil
  else
    say "no package index reachable: give PYTHON=<a python with the repository's requirements>"
    exit 2
  fi
fi

if have_gpu; then
  say "NVIDIA GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1 || echo /dev/nvidia0)"
  if has_cuda_provider "$PY"; then
    say "onnxruntime here already has CUDAExecutionProvider: using it as installed"
  elif index_reachable "$PY"; then
    VENV=${GPU_CHECK_VENV:-/tmp/edgeport-gpu-venv}
    say "installing onnxruntime-gpu into $VENV (over $PY's packages; the installed onnxruntime stays as it is)"
    "$PY" -m venv --system-site-packages "$VENV"
    "$VENV/bin/python" -m pip install -q "onnxruntime-gpu[cuda,cudnn]" || "$VENV/bin/python" -m pip install -q onnxruntime-gpu
    "$VENV/bin/python" -m pip install -q tensorrt-cu12-libs || say "TensorRT libraries not installed (TensorRT will be skipped if absent)"
    PY="$VENV/bin/python"
  else
    say "onnxruntime lacks CUDAExecutionProvider and no package index is reachable: using what is installed"
  fi
  # pip-installed TensorRT libraries are found through the loader path
  trt_libs=$("$PY" -c 'import os, tensorrt_libs; print(os.path.dirname(tensorrt_libs.__file__))' 2>/dev/null || true)
  if [ -n "$trt_libs" ]; then export LD_LIBRARY_PATH="$trt_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
else
  say "no NVIDIA GPU here (no nvidia-smi answer, no /dev/nvidia0): CUDA and TensorRT will be skipped"
fi

say "onnxruntime $("$PY" -c 'import onnxruntime as o; print(o.__version__, o.get_available_providers())')"

export COUNT CONCURRENCY WARMUP READY_TIMEOUT RESULTS_DIR
export GPU_CHECK_BUILD_MODEL=${GPU_CHECK_BUILD_MODEL:-}
exec "$PY" - <<'PYEOF'
"""Driver: model, one runtime per provider, load, table, JSON."""

import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort

COUNT = int(os.environ["COUNT"])
CONCURRENCY = int(os.environ["CONCURRENCY"])
WARMUP = int(os.environ["WARMUP"])
READY_TIMEOUT = float(os.environ["READY_TIMEOUT"])
RESULTS = Path(os.environ["RESULTS_DIR"]) / "gpu_check.json"
NAME = "squeezenet"
# Each provider is asked for with what onnxruntime needs behind it for operators it lacks.
PROVIDERS = {
    "CPU": ["CPUExecutionProvider"],
    "CUDA": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "TensorRT": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def log(msg: str) -> None:
    print(f"[gpu_check] {msg}", file=sys.stderr, flush=True)


def model_file(work: Path) -> tuple[Path, str]:
    """SqueezeNet from the onnx wheel's test data, else a small conv net built here."""
    work.mkdir(parents=True, exist_ok=True)
    target = work / "model.onnx"
    try:
        import onnx
    except ImportError:
        raise SystemExit("[gpu_check] the onnx package is needed for the model (bundled SqueezeNet or a built conv net)")
    data = Path(onnx.__file__).parent / "backend" / "test" / "data"
    found = sorted(p for p in data.rglob("*.onnx") if "squeezenet" in p.name.lower()) if data.is_dir() else []
    if os.environ.get("GPU_CHECK_BUILD_MODEL"):
        found = []
    if found:
        shutil.copyfile(found[0], target)
        return target, f"{found[0].name} (onnx {onnx.__version__} wheel test data)"
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.1, (64, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.1, (128, 64, 3, 3)).astype(np.float32), "w2")
    fc = numpy_helper.from_array(rng.normal(0, 0.1, (128, 1000)).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["m"]),
        helper.make_node("Softmax", ["m"], ["y"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1000])],
        [w1, w2, fc],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(target))
    return target, "a 2-conv net built with onnx.helper"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def start(model: Path, providers: list[str], log_path: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [sys.executable, "-m", "runtimes", "serve", "--model-dir", str(model.parent), "--onnx", model.name,
           "--name", NAME, "--port", str(port), "--grpc-port", "0",
           "--execution-providers", ",".join(providers), "--strict-providers"]  # fmt: skip
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return proc, port
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                if resp.status == 200:
                    return proc, port
        except OSError:
            pass
        time.sleep(0.2)
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def request_bytes(port: int, meta: dict) -> bytes:
    spec = meta["inputs"][0]
    shape = [d if d > 0 else 1 for d in spec["shape"]]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    raw = x.tobytes()
    head = json.dumps({"inputs": [{"name": spec["name"], "shape": shape, "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "parameters": {"binary_data_output": True}}).encode()  # fmt: skip
    body = head + raw
    return (
        f"POST /v2/models/{NAME}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
        f"Inference-Header-Content-Length: {len(head)}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def drive(port: int, request: bytes, total: int, conns: int) -> tuple[list[float], int]:
    """`total` requests over `conns` keep-alive connections; (latencies in s, non-200 answers)."""
    latencies: list[float] = []
    errors = 0
    left = total

    async def worker() -> None:
        nonlocal left, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while left > 0:
                left -= 1
                t0 = time.perf_counter()
                writer.write(request)
                status = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                if not status.startswith(b"HTTP/1.1 200"):
                    errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(conns)))
    return latencies, errors


def measure(label: str, providers: list[str], model: Path) -> dict:
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        return {"provider": label, "status": "skipped",
                "reason": f"{', '.join(missing)} not in this onnxruntime (available: {', '.join(available)})"}  # fmt: skip
    log_path = RESULTS.parent / f"gpu_check-{label}.log"
    started = time.monotonic()
    proc, port = start(model, providers, log_path)
    try:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            return {"provider": label, "status": "skipped", "reason": f"runtime exited {proc.returncode}: " + " | ".join(tail)}
        ready_s = time.monotonic() - started
        meta = get_json(f"http://127.0.0.1:{port}/v2/models/{NAME}")
        session = meta.get("execution_providers", [])
        if not session or session[0] != providers[0]:
            return {"provider": label, "status": "failed", "reason": f"session runs on {session}, not {providers[0]}"}
        request = request_bytes(port, meta)
        asyncio.run(drive(port, request, WARMUP, CONCURRENCY))
        t0 = time.perf_counter()
        latencies, errors = asyncio.run(drive(port, request, COUNT, CONCURRENCY))
        elapsed = time.perf_counter() - t0
        ms = np.array(latencies) * 1e3
        return {
            "provider": label,
            "status": "ok",
            "session_providers": session,
            "requests": len(latencies),
            "errors": errors,
            "concurrency": CONCURRENCY,
            "req_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "ready_s": round(ready_s, 1),
        }
    finally:
        stop(proc)


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)  # fmt: skip
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    model, source = model_file(work / "model")
    log(f"model: {source}; {COUNT} requests per provider at concurrency {CONCURRENCY} (after {WARMUP} warm-up)")
    rows = []
    for label, providers in PROVIDERS.items():
        log(f"{label}: {','.join(providers)}")
        row = measure(label, providers, model)
        log(f"{label}: {row['status']}" + (f" ({row['reason']})" if "reason" in row else ""))
        rows.append(row)
    print(f"\n{'provider':<10} {'status':<8} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9}  session providers / reason")
    for r in rows:
        if r["status"] == "ok":
            print(f"{r['provider']:<10} {'ok':<8} {r['req_per_s']:>9} {r['p50_ms']:>9} {r['p99_ms']:>9}  "
                  f"{','.join(r['session_providers'])}")  # fmt: skip
        else:
            print(f"{r['provider']:<10} {r['status']:<8} {'-':>9} {'-':>9} {'-':>9}  {r['reason']}")
    doc = {
        "model": source,
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "gpu": gpu_name()},
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
        "count": COUNT,
        "concurrency": CONCURRENCY,
        "results": rows,
        "logs": [str(p) for label in PROVIDERS if (p := RESULTS.parent / f"gpu_check-{label}.log").exists()],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {RESULTS} (runtime logs beside it)")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if any(r["status"] == "ok" for r in rows) and not any(r["status"] == "failed" for r in rows) else 1


sys.exit(main())
PYEOF
