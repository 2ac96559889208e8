"""`python -m simulators netfault`: run a fault proxy, or send it a command.

    python -m simulators netfault serve --target 127.0.0.1:1883 --listen-port 11883 --control-port 11884 \\
        [--schedule "10:cut,40:restore"] [--profile iot-edge]
    python -m simulators netfault send --control-port 11884 cut
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys

from simulators.netfault import FaultCommandError, FaultProxy, parse_schedule
from simulators.netfault_control import ControlServer, send_command
from simulators.profiles import UnknownProfile, get_profile


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:1883), got {text!r}")
    return host or "127.0.0.1", int(port)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m simulators netfault",
        description="A simulated network fault: a TCP proxy on 127.0.0.1 that can add latency, blackhole (drop), "
        "cut and restore the link to a hub or broker, on a schedule or on command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2],
    )
    sub = ap.add_subparsers(dest="action", required=True)
    serve = sub.add_parser("serve", help="run the proxy in the foreground until Ctrl-C")
    serve.add_argument("--target", type=_address, required=True, help="HOST:PORT behind the proxy (127.0.0.1 only)")
    serve.add_argument("--listen-port", type=int, default=0, help="port clients connect to (default: any free)")
    serve.add_argument("--control-port", type=int, default=0, help="control socket port (default: any free)")
    serve.add_argument("--schedule", default="", help='commands on a timer, e.g. "10:cut,40:restore,45:latency 200 50"')
    serve.add_argument("--profile", default="", help="apply a device profile's latency and random outages")
    serve.add_argument("--seed", type=int, default=None, help="random seed for --profile outages")
    send = sub.add_parser("send", help="send one command to a running proxy and print its status")
    send.add_argument("--control-port", type=int, required=True, help="the proxy's control port")
    send.add_argument("command", nargs="+", help="cut | drop | restore | latency MS [JITTER] | status")
    return ap


async def _serve(args: argparse.Namespace) -> None:
    proxy = FaultProxy(args.target, listen_port=args.listen_port)
    schedule = parse_schedule(args.schedule) if args.schedule else []  # bad input fails before binding
    link = get_profile(args.profile).link if args.profile else None
    port = await proxy.start()
    control = ControlServer(proxy, args.control_port)
    control_port = await control.start()
    if link is not None:
        proxy.run_flaky(link, seed=args.seed)
    if schedule:
        proxy.run_schedule(schedule)
    print(f"netfault listening on 127.0.0.1:{port} -> {args.target[0]}:{args.target[1]} "
          f"(control 127.0.0.1:{control_port})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await control.stop()
    await proxy.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit 2 on bad input, 1 when the proxy or control socket cannot be reached."""
    args = _parser().parse_args(argv)
    try:
        if args.action == "serve":
            asyncio.run(_serve(args))
            return 0
        reply = send_command(args.control_port, " ".join(args.command))
    except (FaultCommandError, UnknownProfile) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: netfault: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(json.dumps(reply))
    if not reply.get("ok"):
        with contextlib.suppress(Exception):
            print(f"error: {reply.get('error')}", file=sys.stderr)
        return 2
    return 0
