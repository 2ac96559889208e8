"""MQTT client benchmark: the agents' own MQTT 5 client (protos/mqtt) against gmqtt, in the fleet benchmark.

One hub and one mosquitto per fleet size; the same MQTT fleet is started, deployed to and stopped
once per phase, the phases alternating between the two clients (codec, gmqtt, codec, gmqtt, ...) so
that a busy machine weighs on both alike. Each phase is benchmarks/fleet.py's MQTT phase: connect,
deploy a fresh model -> every device Healthy (CPU seconds of the fleet processes, the hub and the
broker over it), a short telemetry window. A warm-up phase (the codec's) comes first and is left out
of the medians: it also enrolls every device, and a first deploy's figures varied the most between runs.

    python benchmarks/mqtt_clients.py --sizes 1000,2000 --rounds 2
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import signal
import statistics
import sys
import tempfile
from pathlib import Path

from fleet import PER_PROCESS, PY, REPO, SHM, Bench, Result, _tmpfs, cpu_seconds  # (benchmarks/: the script's folder)

CLIENTS = {
    "codec": [PY, "-m", "simulators", "fleet"],
    "gmqtt": [PY, str(Path(__file__).resolve().parent / "mqtt_client_gmqtt.py")],
}
WARMUP = "warm-up"  # a codec phase whose figures are printed, not counted


class TimedBench(Bench):
    """Bench that also notes the fleet processes' CPU seconds each time the sensors are toggled (SIGUSR1), so the
    telemetry window's CPU (MQTT publishes, mostly) is known besides the deploy's."""

    toggles: list[float]

    def signal_fleets(self, sig: int) -> None:
        if sig == signal.SIGUSR1:
            self.toggles.append(cpu_seconds([p.pid for p in self.fleets]))
        super().signal_fleets(sig)


def _bench_args(args: argparse.Namespace) -> argparse.Namespace:
    """The settings benchmarks/fleet.py's Bench reads, as its own defaults but a shorter telemetry window."""
    return argparse.Namespace(per_process=args.per_process, telemetry_interval=60, grpc_security="mtls",
                              heartbeat_s=30, points_per_s=args.points_per_s, batch=50, window=args.window,
                              timeout=args.timeout)  # fmt: skip


def run_size(size: int, args: argparse.Namespace, order: list[str]) -> list[tuple[str, Result]]:
    """Every phase at one fleet size, in `order`."""
    done: list[tuple[str, Result]] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"mqtt-clients-{size}-")))
        devices = tmp / "fleet"
        if args.device_disk == "tmpfs":
            devices = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"fleet-{size}-", dir=SHM)))
        bench = TimedBench(size, tmp, devices, _bench_args(args))
        print(f"size {size}: hub {bench.port}, broker {bench.broker.port}, work {tmp}", flush=True)
        try:
            bench.start()
            for i, client in enumerate(order):
                bench.fleet_command = CLIENTS.get(client, CLIENTS["codec"])
                print(f" phase {i + 1}/{len(order)}: {client}", flush=True)
                bench.toggles = []
                try:
                    r = bench.run("mqtt", first=i == 0)
                    # Sensors on, then off: the window's CPU, per point stored (3 s to settle + the window).
                    on, off = bench.toggles[:2]
                    r.deploy_cpu_s["telemetry_fleets"] = off - on
                    r.notes.append(f"telemetry window {3 + args.window:g} s")
                    done.append((client, r))
                except (TimeoutError, RuntimeError) as exc:
                    print(f"  {client}: FAILED: {exc}", flush=True)
                    bench.stop_fleets()
        finally:
            bench.stop()
            # A device that stopped, or a traceback, in any fleet process's log makes the figures suspect.
            for log in sorted(tmp.glob("fleet-*.log")):
                bad = [line for line in log.read_text(errors="replace").splitlines()
                       if "stopped:" in line or "Traceback" in line or ("failed" in line and "0 device" not in line)]
                if bad:
                    print(f"  {log.name}: {len(bad)} line(s) of trouble, first: {bad[0][:200]}", flush=True)
    return done


def summary(size: int, phases: list[tuple[str, Result]]) -> dict:
    """Medians per client and gmqtt's over the codec's."""
    out: dict = {"size": size, "phases": [], "median": {}}
    for client, r in phases:
        out["phases"].append({"client": client, "deploy_s": r.deploy_s, "deploy_cpu_s": r.deploy_cpu_s,
                              "points_per_s": r.points_per_s, "enrolled": r.enrolled})  # fmt: skip
    for client in CLIENTS:
        mine = [r for c, r in phases if c == client]
        if mine:
            out["median"][client] = {
                "fleet_cpu_s": statistics.median(r.deploy_cpu_s["fleets"] for r in mine),
                "broker_cpu_s": statistics.median(r.deploy_cpu_s["broker"] for r in mine),
                "deploy_s": statistics.median(r.deploy_s for r in mine),
                "telemetry_fleet_cpu_s": statistics.median(r.deploy_cpu_s["telemetry_fleets"] for r in mine),
                "points_per_s": statistics.median(r.points_per_s for r in mine),
            }
    medians = out["median"]
    if len(medians) == 2:
        out["gmqtt_over_codec"] = {k: medians["gmqtt"][k] / (medians["codec"][k] or math.nan) for k in medians["codec"]}
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the alternating phases and print medians."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000", help="fleet sizes (default 1000,10000)")
    ap.add_argument("--rounds", type=int, default=2, help="phases per client at each size, alternating (default 2)")
    ap.add_argument("--per-process", type=int, help=f"agents per fleet process (default {PER_PROCESS})")
    ap.add_argument("--points-per-s", type=float, default=100_000, help="telemetry offered (default 100000)")
    ap.add_argument("--window", type=float, default=3.0, help="telemetry window, s (default 3)")
    ap.add_argument("--timeout", type=float, default=600.0, help="per-phase timeout, s (default 600)")
    ap.add_argument("--device-disk", choices=["tmpfs", "work"], default="tmpfs" if _tmpfs() else "work",
                    help="where the simulated devices' data dirs go (default tmpfs where there is one)")
    args = ap.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        print(f"error: --sizes {args.sizes!r}: expected numbers like 1000,2000", file=sys.stderr)
        return 2
    if not sizes or min(sizes) < 1 or args.rounds < 1:
        print("error: --sizes must be positive numbers and --rounds at least 1", file=sys.stderr)
        return 2
    if importlib.util.find_spec("gmqtt") is None:
        print("error: gmqtt is not installed (pip install gmqtt): this benchmark weighs it", file=sys.stderr)
        return 2
    order = [WARMUP, *(client for _ in range(args.rounds) for client in CLIENTS)]
    results = [summary(size, run_size(size, args, order)) for size in sizes]
    print("\n  size  client  phase  deploy s  fleet CPU s  broker CPU s  hub CPU s  telemetry: fleet CPU s  points/s")
    for res in results:
        for i, p in enumerate(res["phases"], 1):
            cpu = p["deploy_cpu_s"]
            print(f"{res['size']:>6}  {p['client']:<7}  {i:>5}  {p['deploy_s']:>8.1f}  {cpu['fleets']:>11.2f}"
                  f"  {cpu['broker']:>12.2f}  {cpu['hub']:>9.2f}  {cpu['telemetry_fleets']:>22.2f}"
                  f"  {p['points_per_s']:>8,.0f}"
                  f"{'  (enrolled first)' if p['enrolled'] else ''}")
        for client, m in res["median"].items():
            print(f"{res['size']:>6}  {client:<6} median: deploy fleet CPU {m['fleet_cpu_s']:.2f} s, "
                  f"deploy {m['deploy_s']:.1f} s, telemetry fleet CPU {m['telemetry_fleet_cpu_s']:.2f} s")
        if "gmqtt_over_codec" in res:
            ratio = res["gmqtt_over_codec"]
            print(f"{res['size']:>6}  gmqtt/codec: deploy fleet CPU x{ratio['fleet_cpu_s']:.2f}, "
                  f"deploy x{ratio['deploy_s']:.2f}, telemetry fleet CPU x{ratio['telemetry_fleet_cpu_s']:.2f}")
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "mqtt_clients.json").write_text(json.dumps({"benchmark": "benchmarks/mqtt_clients.py", "order": order,
                                                       "results": results}, indent=2) + "\n")
    print(f"wrote {out / 'mqtt_clients.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
