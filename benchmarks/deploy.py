"""Deploy benchmark: wall time from `hub deploy` to all-Healthy for fleets of 1, 10 and 50 agents.

Starts its own `hub serve` (mutual TLS) and the largest fleet of real `agent run`
subprocesses at once, each with its own data dir, enrolled through the CLI with labels
that select the first 1, 10, 50 of them. For each size it runs the real CLI,
`hub deploy -n bench-N -m digits:1 --target sizeN=yes` (a no-code ONNX service, the
digits classifier), which returns once every targeted device reports Healthy; the time
of that command is the figure. Every agent starts its own runtime process (onnxruntime
inside), and the service is deleted (runtimes stopped) before the next size. The model
file is shared through the hub as usual: each agent pulls it into its own cache.

    python benchmarks/deploy.py [--sizes 1,10,50] [--repeats 1] [--keep-data]

Prints a table and writes benchmarks/results/deploy.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

RESULTS = Path(__file__).resolve().parent / "results" / "deploy.json"
REPO = Path(__file__).resolve().parent.parent


@dataclass
class SizeResult:
    """Figures for one fleet size."""

    agents: int
    runs_s: list[float]
    median_s: float | None  # None when every run failed
    runtime_rss_mb_total: float  # RSS of all runtimes of this service once Healthy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hub(url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "hub", "--hub", url, *args], capture_output=True, text=True,
                          timeout=900)
    if check and proc.returncode != 0:
        raise SystemExit(f"hub {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def _runtimes(root: Path) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "runtimes" in cmd and " serve" in cmd and str(root) in cmd:
            out.append(p)
    return out


def _rss_mb(procs: list[psutil.Process]) -> float:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):  # a runtime may exit while we look
            total += p.memory_info().rss
    return total / 2**20


def run(sizes: list[int], repeats: int, work: Path, failures: list[str]) -> list[SizeResult]:
    """Start hub + fleet in `work`, measure every size, stop everything."""
    port, grpc_port = _free_port(), _free_port()
    url = f"http://127.0.0.1:{port}"
    children: list[subprocess.Popen[bytes]] = []
    logs = work / "logs"
    logs.mkdir(parents=True)

    def start(args: list[str], name: str) -> subprocess.Popen[bytes]:
        with open(logs / f"{name}.log", "wb") as fh:
            proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        children.append(proc)
        return proc

    try:
        start([sys.executable, "-m", "hub", "serve", "--data-dir", str(work / "hub"), "--port", str(port),
               "--grpc-port", str(grpc_port)], "hub")
        _wait(lambda: (work / "hub" / "admin.token").exists(), 30, "the hub's admin token")
        os.environ["EDGEPORT_TOKEN"] = (work / "hub" / "admin.token").read_text().strip()  # for every `hub` call
        _wait(lambda: _hub(url, "device", "list", check=False).returncode == 0, 30, "the hub")
        fleet = max(sizes)
        print(f"starting {fleet} agents ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        for i in range(fleet):
            name = f"bench-{i:03d}"
            labels = [a for n in sizes if i < n for a in ("--label", f"size{n}=yes")]
            token = json.loads(_hub(url, "device", "enroll", name, *labels, "--output", "json").stdout)["token"]
            start([sys.executable, "-m", "agent", "run", "--hub", f"127.0.0.1:{port}", "--token", token,
                   "--data-dir", str(work / name), "--heartbeat-s", "10",
                   *(["--runtime-user", "root"] if os.geteuid() == 0 else [])], name)  # local agents, as in tests

        def online() -> bool:
            devices = json.loads(_hub(url, "device", "list", "--output", "json").stdout)
            return sum(d["online"] for d in devices) == fleet

        _wait(online, 300, f"{fleet} agents online")
        print(f"{fleet} agents enrolled and online in {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
        from simulators.models import build_digits_onnx

        model = build_digits_onnx(work / "digits" / "model.onnx")
        _hub(url, "model", "register", "-n", "digits", "-p", str(model))
        results = []
        for n in sizes:
            runs = []
            rss = 0.0
            for r in range(repeats):
                service = f"bench-{n}-{r}"
                t = time.monotonic()
                out = _hub(url, "deploy", "-n", service, "-m", "digits:1", "--target", f"size{n}=yes",
                           "--timeout", "600", check=False)
                elapsed = time.monotonic() - t
                if out.returncode != 0:  # reported, not hidden: the run counts as a failure
                    reason = (out.stderr.strip().splitlines() or ["?"])[0]
                    failures.append(f"{n} agents, run {r + 1}: {reason}")
                    print(f"  {n:3d} agents: FAILED after {elapsed:.2f}s: {reason}", file=sys.stderr, flush=True)
                else:
                    runs.append(elapsed)
                    rss = _rss_mb(_runtimes(work))
                    print(f"  {n:3d} agents: all Healthy {elapsed:.2f}s after `hub deploy` (run {r + 1})",
                          file=sys.stderr, flush=True)
                _hub(url, "service", "delete", service)
                _wait(lambda: not _runtimes(work), 120, "runtimes stopped")
            median = round(statistics.median(runs), 3) if runs else None
            results.append(SizeResult(n, [round(x, 3) for x in runs], median, round(rss, 1)))
        return results
    finally:
        for proc in reversed(children):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for proc in children:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def main() -> int:
    """Run, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10,50", help="fleet sizes, comma separated (default 1,10,50)")
    parser.add_argument("--repeats", type=int, default=1, help="deploys per size (default 1)")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary hub/agent folders")
    args = parser.parse_args()
    try:
        sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if not sizes or sizes[0] < 1 or args.repeats < 1:
        parser.error("sizes and --repeats must be positive")
    work = Path(tempfile.mkdtemp(prefix="edgeport-deploy-bench-"))
    try:
        failures: list[str] = []
        results = run(sizes, args.repeats, work, failures)
    finally:
        if args.keep_data:
            print(f"data kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{'AGENTS':>6}  {'DEPLOY -> ALL HEALTHY (median s)':>32}  {'RUNS (s)':<24}  RUNTIMES RSS (MB)")
    for r in results:
        runs = ", ".join(f"{x:.2f}" for x in r.runs_s)
        median = f"{r.median_s:.2f}" if r.median_s is not None else "failed"
        print(f"{r.agents:>6}  {median:>32}  {runs:<24}  {r.runtime_rss_mb_total:.0f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "deploy",
        "what": "wall time of `hub deploy` (no-code ONNX digits) until every targeted agent reports Healthy",
        "machine": {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
                    "platform": platform.platform(), "python": platform.python_version()},
        "results": [asdict(r) for r in results],
        "failures": failures,
    }, indent=2) + "\n")
    for f in failures:
        print(f"failed: {f}")
    print(f"wrote {RESULTS}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
