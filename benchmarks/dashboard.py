"""Dashboard benchmark: the fleet page and a device's charts with 1,000 simulated agents sending telemetry.

One real hub (`hub serve`, gRPC in its plain-text development mode so 1,000 TLS handshakes do not
dominate a small machine) and one fleet process of N real agents (`simulators fleet`, simulated
hardware, one shared runtime per service), a no-code ONNX service deployed to all of them, and
every agent's simulated sensor sending points. Then, with ingest running:

  * ingest without the dashboard: telemetry points stored per second over --window seconds
    (from the hub's own /metrics counter), and the hub's CPU;
  * ingest with the dashboard open: the same while one viewer's tab polls what the page script
    polls (the fleet fragment every 2 s, the device's charts fragment every 10 s);
    the two alternate, twice, and each figure is the mean of its two windows;
  * latency: --requests sequential GETs each of the fleet fragment (first page of 100 rows, counts
    of all N), of one device's chart query (REST aggregate, 1 h in 1-minute buckets), and of the
    device page's charts fragment (8 aggregates drawn as SVG): p50 / p95 / max.

Targets: fleet page p95 < 300 ms, chart query p95 < 100 ms, ingest with the dashboard open
within 10 % of without. Results go to benchmarks/results/dashboard.json.

    python benchmarks/dashboard.py                    # 1,000 agents
    python benchmarks/dashboard.py --agents 200 --window 20
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from simulators.models import build_digits_onnx  # noqa: E402

PY = sys.executable
TARGETS = {"fleet_page_p95_ms": 300.0, "chart_query_p95_ms": 100.0, "ingest_ratio_min": 0.90}


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Bench:
    """The hub, the fleet and the measurements."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.hub_proc: subprocess.Popen[bytes] | None = None

    # ---- processes ----

    def start(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        with open(self.work / log, "ab") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=self.env,
                                    start_new_session=True)  # fmt: skip
        self.procs.append(proc)
        return proc

    def start_hub(self) -> None:
        data = self.work / "hub"
        self.hub_proc = self.start(
            [PY, "-m", "hub", "serve", "--data-dir", str(data), "--port", str(self.port), "--grpc-port",
             str(self.grpc_port), "--insecure", "--telemetry-interval", str(self.args.telemetry_interval)],
            "hub.log",
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url + "/ui/login", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or self.hub_proc.poll() is not None:
                    raise RuntimeError("hub did not start:\n" + (self.work / "hub.log").read_text()[-2000:]) from None
                time.sleep(0.2)
        admin = data / "admin.token"  # a hub with API tokens writes its first admin token here
        if admin.exists():
            self.env["EDGEPORT_TOKEN"] = admin.read_text().strip()

    def hub(self, *args: str) -> str:
        done = subprocess.run([PY, "-m", "hub", *args, "--hub", self.url], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"hub {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def online(self) -> int:
        conn = sqlite3.connect(f"file:{self.work / 'hub' / 'hub.db'}?mode=ro", uri=True, timeout=30)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM devices WHERE online = 1").fetchone()[0])
        finally:
            conn.close()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    # ---- HTTP ----

    def get(self, path: str) -> tuple[float, bytes]:
        """(seconds, body) of one GET with the viewer's token."""
        headers = {"Authorization": f"Bearer {self.env.get('EDGEPORT_TOKEN', 'viewer')}"}
        started = time.perf_counter()
        with urllib.request.urlopen(urllib.request.Request(self.url + path, headers=headers), timeout=30) as r:
            body = r.read()
        return time.perf_counter() - started, body

    def points_ingested(self) -> float:
        _, body = self.get("/metrics")
        for family in text_string_to_metric_families(body.decode()):
            if family.name == "edgeport_hub_telemetry_points_ingested":
                return float(family.samples[0].value)
        raise RuntimeError("the hub's /metrics has no edgeport_hub_telemetry_points_ingested")

    # ---- phases ----

    def setup(self) -> str:
        self.start_hub()
        n = self.args.agents
        rate = self.args.points_per_s / n
        self.fleet = self.start(
            [PY, "-m", "simulators", "fleet", "--count", str(n), "--hub", f"127.0.0.1:{self.port}", "--transport",
             "grpc", "--insecure", "--data-dir", str(self.work / "devices"), "--name-prefix", "bench",
             "--label", "fleet=bench", "--profile", "iot-edge", "--shared-runtime", "--quiet",
             "--telemetry-rate", str(rate), "--telemetry-batch", str(self.args.batch), "--telemetry-paused"],
            "fleet.log",
        )  # fmt: skip
        self.wait(f"{n} agents online", lambda: self.online() >= n, 600)
        model = self.work / "digits" / "model.onnx"
        build_digits_onnx(model)
        self.hub("model", "register", "-n", "digits", "-p", str(model))
        dc = self.work / "dc.json"
        dc.write_text(json.dumps({"computeType": "edge"}))
        started = time.monotonic()
        self.hub("deploy", "-n", "bench-svc", "-m", "digits:1", "--dc", str(dc), "--target", "fleet=bench",
                 "--timeout", "600")  # fmt: skip
        print(f"  deployed to {n} agents, all Healthy, in {time.monotonic() - started:.1f}s", flush=True)
        os.kill(self.fleet.pid, signal.SIGUSR1)  # sensors on
        time.sleep(self.args.warmup)
        return "bench-00000"  # a device to chart: the fleet names them PREFIX-00000...

    def wait(self, what: str, check: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline or (self.fleet.poll() is not None):
                log = (self.work / "fleet.log").read_text()[-2000:]
                raise RuntimeError(f"{what}: not after {timeout:.0f}s\n{log}")
            time.sleep(1)
        print(f"  {what}", flush=True)

    def ingest(self, viewer: bool, device: str) -> dict[str, float]:
        """Points stored per second and hub CPU over the window, with or without one open dashboard tab."""
        stop = threading.Event()
        polls: list[float] = []

        def tab() -> None:  # what dashboard.js does for one open fleet page, then one device page
            next_charts = 0.0
            while not stop.is_set():
                polls.append(self.get("/ui/fragments/fleet?selector=&page=0")[0])
                if time.monotonic() >= next_charts:
                    polls.append(self.get(f"/ui/fragments/devices/{device}/charts?since=1h&every=1m")[0])
                    next_charts = time.monotonic() + 10
                stop.wait(2)

        hub = psutil.Process(self.hub_proc.pid)  # type: ignore[union-attr]
        thread = threading.Thread(target=tab, daemon=True) if viewer else None
        if thread:
            thread.start()
        cpu0, points0, t0 = _cpu(hub), self.points_ingested(), time.monotonic()
        time.sleep(self.args.window)
        cpu1, points1, t1 = _cpu(hub), self.points_ingested(), time.monotonic()
        stop.set()
        if thread:
            thread.join(30)
        out = {"points_per_s": (points1 - points0) / (t1 - t0), "hub_cpu_cores": (cpu1 - cpu0) / (t1 - t0)}
        if viewer:
            out["viewer_requests"] = len(polls)
        return out

    def latency(self, path: str) -> dict[str, float]:
        times = sorted(self.get(path)[0] * 1000 for _ in range(self.args.requests))
        return {
            "p50_ms": round(statistics.median(times), 2),
            "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 2),
            "max_ms": round(times[-1], 2),
            "requests": len(times),
        }


def _mean(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's mean over the runs."""
    return {k: round(sum(r[k] for r in runs) / len(runs), 3) for k in runs[0]}


def _cpu(proc: psutil.Process) -> float:
    """CPU seconds (user + system) of a process and its children (the hub's helpers)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=1000, help="simulated agents (default 1000)")
    ap.add_argument("--points-per-s", type=float, default=2000.0,
                    help="telemetry points per second offered by the whole fleet (default 2000)")  # fmt: skip
    ap.add_argument("--batch", type=int, default=10, help="points per telemetry message (default 10)")
    ap.add_argument("--telemetry-interval", type=int, default=15, help="agents' own figures every N s (default 15)")
    # 45 s: a whole number of the sensors' 5 s batches and of the agents' own 15 s telemetry rounds, which
    # arrive in bursts (the fleet's agents start together).
    ap.add_argument("--window", type=float, default=45.0,
                    help="seconds each of the four ingest phases is measured (default 45)")  # fmt: skip
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds of ingest before measuring (default 10)")
    ap.add_argument("--requests", type=int, default=100, help="GETs per latency figure (default 100)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="edgeport-dashboard-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            print(f"dashboard benchmark: {args.agents} agents, {args.points_per_s:g} points/s offered", flush=True)
            device = bench.setup()
            # Alternate without / with, twice, so a drift in the machine's load falls on both alike.
            phases = [bench.ingest(viewer=open_tab, device=device) for open_tab in (False, True, False, True)]
            for open_tab, figures in zip((False, True, False, True), phases, strict=True):
                print(f"  ingest, {'dashboard open' if open_tab else 'no dashboard'}: {figures}", flush=True)
            without = _mean(phases[0::2])
            with_tab = _mean(phases[1::2])
            fleet_page = bench.latency("/ui/fragments/fleet?selector=&page=0")
            chart_query = bench.latency(
                f"/api/v1/devices/{device}/telemetry/aggregate?metric=sim.load&since=3600&every=60"
            )
            charts_fragment = bench.latency(f"/ui/fragments/devices/{device}/charts?since=1h&every=1m")
            shell = bench.latency("/")
        finally:
            bench.stop()

    ratio = with_tab["points_per_s"] / without["points_per_s"] if without["points_per_s"] else float("nan")
    result = {
        "benchmark": "dashboard",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "note": "shared machine: figures are noisy"},
        "agents": args.agents,
        "offered_points_per_s": args.points_per_s,
        "ingest_without_dashboard": without,
        "ingest_with_dashboard": with_tab,
        "ingest_ratio": round(ratio, 3),
        "ingest_phases": [{"dashboard_open": bool(i % 2), **p} for i, p in enumerate(phases)],
        "fleet_page": fleet_page,
        "chart_query": chart_query,
        "device_charts_fragment": charts_fragment,
        "page_shell": shell,
        "targets": TARGETS,
        "met": {
            "fleet_page_p95": fleet_page["p95_ms"] < TARGETS["fleet_page_p95_ms"],
            "chart_query_p95": chart_query["p95_ms"] < TARGETS["chart_query_p95_ms"],
            "ingest_within_10pct": ratio >= TARGETS["ingest_ratio_min"],
        },
    }
    out = REPO / "benchmarks" / "results" / "dashboard.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  fleet page     p50 {fleet_page['p50_ms']} ms  p95 {fleet_page['p95_ms']} ms  (target < 300)")
    print(f"  chart query    p50 {chart_query['p50_ms']} ms  p95 {chart_query['p95_ms']} ms  (target < 100)")
    print(f"  charts (8 SVG) p50 {charts_fragment['p50_ms']} ms  p95 {charts_fragment['p95_ms']} ms")
    print(f"  ingest with/without the dashboard open: {ratio:.3f}  (target >= 0.90)")
    print(f"  wrote {out.relative_to(REPO)}")
    return 0 if all(result["met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
