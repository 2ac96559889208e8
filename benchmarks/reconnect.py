"""Hub restart under a connected gRPC fleet: how the fleet comes back, with and without a reconnect spread.

A hub restart ends every agent's session at once. An agent then waits a short pause plus a random share of
the spread the hub named in its Welcome (enrolled devices / `hub serve --reconnect-rate`, at most 120 s)
before it dials again. Without a spread the whole fleet redoes its mutual-TLS handshake within a second.

For each setting the benchmark restarts the hub once so the agents learn the setting's spread, then
`--rounds` more times, and measures per restart:
  * outage: the old hub's SIGTERM -> every device online at the new hub (the hub takes a few seconds
    to start; agents that dial before it listens back off and try again);
  * back: the new hub listening -> every device online;
  * Connect calls the hub took (more than the fleet: agents that gave up waiting and dialled again);
  * the hub's CPU seconds over the outage and its API's answer time meanwhile (`GET /api/v1/devices/NAME`,
    every 0.2 s: median and worst).

Settings: "burst" (`--reconnect-rate 1000000`: no spread past the agents' own 0.5-1.5 s) and "spread" (the
hub's default rate). Agents are the real agent code, many per process (`simulators fleet`), mutual TLS.

    python benchmarks/reconnect.py                   # 5,000 agents, burst vs spread, 1 round each
    python benchmarks/reconnect.py --size 10000 --rounds 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from fleet import PER_PROCESS, REPO, SHM, Bench, _tmpfs  # (benchmarks/ is the script's folder)

SETTINGS = {"burst": ["--reconnect-rate", "1000000"], "spread": []}
PROBE_EVERY_S = 0.2


class ApiProbe:
    """Times `GET /api/v1/devices/NAME` every PROBE_EVERY_S in a thread; a failure counts as its timeout."""

    def __init__(self, port: int, device: str, timeout_s: float = 30.0) -> None:
        self.url = f"http://127.0.0.1:{port}/api/v1/devices/{device}"
        self.timeout_s = timeout_s
        self.seconds: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(PROBE_EVERY_S):
            start = time.monotonic()
            try:
                # the hub's admin token, which the fleet benchmark put in the environment when it started the hub
                request = urllib.request.Request(
                    self.url, headers={"Authorization": f"Bearer {os.environ.get('EDGEPORT_TOKEN', '')}"}
                )
                with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                    reply.read()
            except OSError:
                if self._stop.is_set():  # the hub went away because the round ended
                    return
                time.sleep(PROBE_EVERY_S)  # the hub is not up yet: not an answer time
                continue
            self.seconds.append(time.monotonic() - start)

    def close(self) -> list[float]:
        """Stop probing; the answer times measured."""
        self._stop.set()
        self._thread.join(self.timeout_s + 1)
        return self.seconds


def connects(bench: Bench, since: int) -> int:
    """Connect calls the hub logged after byte `since` of its log."""
    with open(bench.work / "hub.log", "rb") as log:
        log.seek(since)
        return log.read().count(b" connected (")


def wait_online(bench: Bench, what: str, size: int, timeout: float) -> float:
    """Seconds until `size` devices are online at the hub (one count per look)."""

    def check() -> bool | str:
        online = bench.db("SELECT count(*) FROM devices WHERE online = 1")
        return online >= size or f"{online}/{size}"

    return bench.wait(what, check, timeout)


def restart(bench: Bench, size: int, timeout: float) -> dict[str, float]:
    """Restart the hub under the connected fleet; time until every device is online again."""
    log_at = (bench.work / "hub.log").stat().st_size
    start = time.monotonic()
    bench.stop_hub()
    bench.start_hub()
    assert bench.sampler is not None
    up = time.monotonic()
    cpu0 = bench.sampler.cpu()
    probe = ApiProbe(bench.port, "p0-00000")
    try:
        wait_online(bench, "back online", size, timeout)
    finally:
        answers = probe.close()
    done = time.monotonic()
    return {
        "outage_s": round(done - start, 2),
        "back_s": round(done - up, 2),
        "connects": connects(bench, log_at),
        "hub_cpu_s": round(bench.sampler.cpu() - cpu0, 2),
        "api_median_ms": round(statistics.median(answers) * 1000, 1) if answers else float("nan"),
        "api_max_ms": round(max(answers) * 1000, 1) if answers else float("nan"),
        "api_answers": len(answers),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=5000, help="agents (default 5000)")
    ap.add_argument("--rounds", type=int, default=1, help="measured restarts per setting (default 1)")
    ap.add_argument("--settings", default="burst,spread", help="which, in order (default burst,spread)")
    ap.add_argument("--timeout", type=float, default=600.0, help="per-phase timeout, s (default 600)")
    ap.add_argument("--json", type=Path, help="also write the figures here (default benchmarks/results/)")
    args = ap.parse_args(argv)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    if args.size < 1 or args.rounds < 1:
        print(f"error: --size {args.size} and --rounds {args.rounds}: both must be at least 1", file=sys.stderr)
        return 2
    if not settings or set(settings) - set(SETTINGS):
        print(f"error: --settings {args.settings!r}: choose from {', '.join(SETTINGS)}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like Ctrl-C
    fleet_args = argparse.Namespace(per_process=None, telemetry_interval=60, heartbeat_s=30, grpc_security="mtls",
                                    timeout=args.timeout)  # fmt: skip
    results: list[dict[str, object]] = []
    print(f"reconnect benchmark: {args.size} real agents over mutual-TLS gRPC, {PER_PROCESS} per process; "
          "the hub is restarted under them", flush=True)  # fmt: skip
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="reconnect-bench-")))
        devices = work / "fleet"
        if _tmpfs():
            devices = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="reconnect-", dir=SHM)))
        bench = Bench(args.size, work, devices, fleet_args)
        stack.callback(bench.stop)
        bench.start()
        bench.start_fleets("grpc", 0.0, 1)
        took = wait_online(bench, "online", args.size, args.timeout)
        print(f"  {args.size} online after {took:.1f} s (enrollment included)", flush=True)
        for setting in settings:
            bench.hub_args = SETTINGS[setting]
            restart(bench, args.size, args.timeout)  # the agents learn this setting's spread from the new hub
            for i in range(args.rounds):
                figures = restart(bench, args.size, args.timeout)
                results.append({"setting": setting, "round": i + 1, **figures})
                print(f"  {setting}: back in {figures['back_s']} s (outage {figures['outage_s']} s), "
                      f"{figures['connects']} Connect calls, hub {figures['hub_cpu_s']} CPU-s, API "
                      f"{figures['api_median_ms']} ms median / {figures['api_max_ms']} ms worst", flush=True)
    print("\n  setting  round  outage s  back s  connects  hub CPU-s  API median ms  API worst ms")
    for r in results:
        print(f"  {r['setting']:<7}  {r['round']:>5}  {r['outage_s']:>8}  {r['back_s']:>6}  {r['connects']:>8}"
              f"  {r['hub_cpu_s']:>9}  {r['api_median_ms']:>13}  {r['api_max_ms']:>12}")
    out = args.json or REPO / "benchmarks" / "results" / "reconnect.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "benchmarks/reconnect.py", "size": args.size, "results": results},
                              indent=2) + "\n")  # fmt: skip
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
