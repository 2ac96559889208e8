"""`python -m simulators fleet`: run N simulated agents (simulators/fleet.py) in this process until told to stop.

Ctrl-C or SIGTERM stops every agent cleanly (MQTT devices say 'offline'); SIGUSR1 pauses and resumes
the simulated sensors, which benchmarks use to time their phases. Bad input exits 2, devices that
failed exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agent import run_event_loop
from simulators.fleet import FleetError, FleetOptions, SimulatedFleet
from simulators.process import settle_collector


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m simulators fleet",
        description="Run N simulated devices (the real agent code, simulated hardware) in this process, sharing "
        "one event loop; each has its own identity and data dir. Stops on Ctrl-C/SIGTERM (agents close their "
        "links cleanly).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  python -m simulators fleet --count 100 --profile iot-edge --hub 127.0.0.1:7070\n"
        "  python -m simulators fleet --count 20 --profile k8s-node --hub 127.0.0.1:7070 --transport grpc\n"
        "  python -m simulators fleet --count 5 --hub 127.0.0.1:7070 --broker mqtt://127.0.0.1:11883 "
        "--telemetry-rate 50\n",
    )
    ap.add_argument("--count", type=int, required=True, help="number of simulated devices")
    ap.add_argument("--hub", default="127.0.0.1:7070", help="hub API HOST:PORT (default 127.0.0.1:7070)")
    ap.add_argument(
        "--token", default=os.environ.get("EDGEPORT_TOKEN", ""),
        help="admin API token for enrolling the devices (default $EDGEPORT_TOKEN)",
    )
    ap.add_argument(
        "--profile",
        default="iot-edge",
        help="device profile: cloud-vm, cloud-vm-gpu, k8s-node, iot-edge (default), fpga-board",
    )
    ap.add_argument("--transport", choices=["grpc", "mqtt"], help="link to the hub (default: the profile's)")
    ap.add_argument("--broker", help="MQTT broker URL overriding the enrolled one (e.g. a netfault proxy)")
    ap.add_argument("--insecure", action="store_true",
                    help="plain-text gRPC (the hub runs with --insecure) and plain mqtt:// to a broker on another "
                    "machine")  # fmt: skip
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".edgeport/fleet"),
        help="root of the devices' data dirs (default .edgeport/fleet); reused on the next run",
    )
    ap.add_argument("--name-prefix", default="sim", help="device names are PREFIX-00000, ... (default sim)")
    ap.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="extra device label")
    ap.add_argument("--heartbeat-s", type=int, help="heartbeat interval (default: what the hub says)")
    ap.add_argument(
        "--telemetry-rate",
        type=float,
        default=0.0,
        help="simulated sensor points per second per device (default 0: none)",
    )
    ap.add_argument("--telemetry-batch", type=int, default=10, help="points per telemetry message (default 10)")
    ap.add_argument(
        "--telemetry-paused",
        action="store_true",
        help="start with the sensors paused; SIGUSR1 toggles them (benchmarks time phases this way)",
    )
    ap.add_argument(
        "--shared-runtime",
        action="store_true",
        help="agents of this process share one real runtime per service generation (for fleets too "
        "large to start a runtime process per agent)",
    )
    ap.add_argument("--quiet", action="store_true", help="no per-agent progress lines (large fleets)")
    ap.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many seconds (default: run until Ctrl-C)"
    )
    return ap


async def _run_cli(options: FleetOptions, duration: float, restart_argv: list[str] | None = None) -> int:
    fleet = SimulatedFleet(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if options.threads > 0:  # the agents' blocking work (blob pulls waiting on the hub, layouts) runs here
        loop.set_default_executor(ThreadPoolExecutor(max_workers=options.threads, thread_name_prefix="fleet"))
    started = time.monotonic()
    if restart_argv and await fleet.enroll(progress=True):
        # As an agent does after enrolling (agent.daemon.Reexec): start afresh, so that enrollment's libraries
        # and garbage (cryptography, thousands of key exchanges) do not stay in the process that runs the agents.
        print("fleet: starting afresh without enrollment's memory, as an agent does after enrolling", flush=True)
        os.execv(sys.executable, [sys.executable, *restart_argv])
    await fleet.start(progress=True)
    # Each daemon installs its own SIGTERM handler once set up; wait for all, then the fleet's wins.
    while not all(d.daemon.reconciler is not None or (d.task is not None and d.task.done()) for d in fleet.devices):
        await asyncio.sleep(0.2)
    for sig in (signal.SIGINT, signal.SIGTERM):  # after the daemons installed theirs: the fleet stops all
        loop.add_signal_handler(sig, stop.set)

    def toggle_load() -> None:
        fleet.load_paused = not fleet.load_paused
        print(f"fleet: sensors {'paused' if fleet.load_paused else 'running'}", flush=True)

    loop.add_signal_handler(signal.SIGUSR1, toggle_load)
    settle_collector()
    print(
        f"fleet: {options.count} {fleet.profile.name} agent(s) over {fleet.transport} started in "
        f"{time.monotonic() - started:.1f}s (pid {os.getpid()}, data {options.root})",
        flush=True,
    )
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), duration or None)
    await fleet.stop()
    failed = fleet.failed()
    print(f"fleet: stopped; {len(failed)} device(s) failed", flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit 2 on bad input, 1 when devices failed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    labels: dict[str, str] = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"error: --label {item!r}: expected KEY=VALUE", file=sys.stderr)
            return 2
        labels[key] = value
    options = FleetOptions(
        hub=args.hub,
        count=args.count,
        root=args.data_dir,
        profile=args.profile,
        transport=args.transport,
        broker=args.broker,
        insecure=args.insecure,
        name_prefix=args.name_prefix,
        labels=labels,
        heartbeat_s=args.heartbeat_s,
        telemetry_rate=args.telemetry_rate,
        telemetry_batch=args.telemetry_batch,
        telemetry_paused=args.telemetry_paused,
        shared_runtime=args.shared_runtime,
        quiet=args.quiet,
        token=args.token,
    )
    try:
        # Run as `python -m simulators fleet`: the command line to start afresh with after enrolling.
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        restart = ["-m", "simulators", "fleet", *argv] if spec and spec.name == "simulators.__main__" else None
        return run_event_loop(_run_cli(options, args.duration, restart))
    except FleetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if "--" in str(exc) or "unknown device profile" in str(exc) else 1
    except KeyboardInterrupt:
        return 0
