"""`agent`: the device daemon's command line (`agent run`, `agent status`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

RUN_HELP = """\
Enroll this device with the hub (first start, with --token) and keep its services converged
to what the hub wants. State lives in --data-dir; run again without --token to resume.

examples:
  agent run --hub 127.0.0.1:7070 --token ep1.... --data-dir /var/lib/edgeport
  agent run --hub https://hub.example.net:7070 --token ep1.... --data-dir /var/lib/edgeport
  agent run --hub 127.0.0.1:7070 --data-dir ./dev1 --insecure --label site=lab
  agent run --hub 127.0.0.1:7070 --data-dir /var/lib/edgeport --runtime-user scorer

Runtimes run user code (entry scripts). An agent running as root starts them as an unprivileged
user, for whom only the service's folder is writable: --runtime-user NAME, else the system user
edgeport-runtime (made with useradd when missing). If no such user can be had the agent refuses
to start rather than run them as root; --runtime-user root runs them as root on purpose.
"""
RUNTIME_USER_ENV = "EDGEPORT_RUNTIME_USER"  # the default of --runtime-user


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"label {text!r} must look like key=value")
    return key.strip(), value.strip()


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def _hub(text: str) -> str:
    address = text.removeprefix("http://").removeprefix("https://").rstrip("/")
    host, sep, port = address.rpartition(":")
    if not sep:
        return f"{text.rstrip('/')}:7070"  # the hub's default API port
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"--hub {text!r} must be HOST:PORT (e.g. 127.0.0.1:7070)")
    return text.rstrip("/")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `agent`."""
    parser = argparse.ArgumentParser(prog="agent", description="Edgeport device agent: runs the hub's models here.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="enroll (once) and run the agent", description=RUN_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    run.add_argument(
        "--hub", type=_hub, default="127.0.0.1:7070",
        help="hub API address HOST:PORT, or https://HOST:PORT for a hub on a network address (its CA is "
        "checked against the enrollment token's pin; default %(default)s)",
    )
    run.add_argument("--token", help="one-time enrollment token from `hub device enroll` (first start only)")
    run.add_argument("--data-dir", type=Path, required=True, help="the agent's state, cache, logs and identity")
    run.add_argument("--insecure", action="store_true",
                     help="development only, no transport security: plain-text gRPC (the hub must run with "
                     "--insecure too) and plain mqtt:// to a broker on another machine")  # fmt: skip
    run.add_argument("--transport", choices=["grpc", "mqtt"], default="grpc", help="link to the hub (default grpc)")
    run.add_argument("--broker", help="MQTT broker URL overriding the one the hub gave at enrollment")
    run.add_argument("--profile", help="simulated device profile: path of a profile JSON file")
    run.add_argument("--label", action="append", type=_label, default=[], metavar="KEY=VALUE",
                     help="label attached to this agent's telemetry (repeatable)")  # fmt: skip
    run.add_argument("--heartbeat-s", type=_positive,
                     help="seconds with nothing sent before a heartbeat (default: what the hub says)")  # fmt: skip
    run.add_argument("--telemetry-s", type=_positive, help="telemetry interval in seconds (default: what the hub says)")
    run.add_argument("--runtime-host", default="127.0.0.1", help="address runtimes listen on (default %(default)s)")
    run.add_argument("--runtime-user", default=os.environ.get(RUNTIME_USER_ENV, ""), metavar="NAME",
                     help="the user runtimes run as when the agent runs as root (default: $EDGEPORT_RUNTIME_USER, "
                          "else edgeport-runtime, made if missing; 'root' to run them as root)")  # fmt: skip
    run.add_argument("--keep-runtimes", action="store_true",
                     help="leave runtimes running when the agent stops (a restarted agent adopts them)")  # fmt: skip
    run.add_argument("--cache-max-gb", type=float, default=10.0, help="artifact cache bound (default %(default)s GB)")
    run.add_argument("--metrics-port", type=_port, metavar="PORT",
                     help="serve the agent's Prometheus /metrics on this port (default: off, to save memory)")
    run.add_argument("--metrics-host", default="127.0.0.1", help="address /metrics listens on (default %(default)s)")
    run.add_argument("--pull-retry-window-s", type=_positive, default=300, metavar="SECONDS",
                     help="how long to retry a pull the registry keeps refusing (a blob corrupt on the hub) before "
                          "the deploy fails (default %(default)s); an unreachable hub is retried for ever")  # fmt: skip

    status = sub.add_parser("status", help="show this agent's identity, services and outbox (offline, from state)")
    status.add_argument("--data-dir", type=Path, required=True)
    return parser


def _status(data_dir: Path) -> int:
    from agent.outbox import Outbox
    from agent.state import AgentState
    from protos.edgeport.v1 import agent_pb2

    if not (data_dir / "agent.db").exists():
        print(f"error: {data_dir} is not an agent data dir (no agent.db)", file=sys.stderr)
        return 2
    state = AgentState(data_dir)
    ident = state.identity()
    messages, size = Outbox(state).size()
    out = {
        "device": ident.device_id if ident else None,
        "hub": ident.hub if ident else None,
        "desired_revision": state.desired().revision,
        "services": [
            {
                "name": r.name,
                "generation": r.generation,
                "phase": agent_pb2.Phase.Name(r.phase),
                "port": r.port,
                "pid": r.pid,
                "failed_generation": r.failed_generation,
                "restarts": r.restarts,
                "message": r.message,
            }
            for r in state.services().values()
        ],
        "outbox": {"messages": messages, "bytes": size},
    }
    print(json.dumps(out, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `agent` console script; returns the exit code (2 bad input, 1 failure)."""
    args = build_parser().parse_args(argv)
    if args.command == "status":
        return _status(args.data_dir)
    from agent.daemon import AgentConfig, main_async

    if args.cache_max_gb <= 0:
        print("error: --cache-max-gb must be greater than 0", file=sys.stderr)
        return 2
    config = AgentConfig(
        hub=args.hub,
        data_dir=args.data_dir,
        token=args.token,
        insecure=args.insecure,
        transport=args.transport,
        broker=args.broker,
        profile=args.profile,
        labels=dict(args.label),
        heartbeat_s=args.heartbeat_s,
        telemetry_s=args.telemetry_s,
        runtime_host=args.runtime_host,
        runtime_user=args.runtime_user,
        keep_runtimes=args.keep_runtimes,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        owns_process=True,
        cache_max_bytes=int(args.cache_max_gb * 1024**3),
        pull_retry_window_s=float(args.pull_retry_window_s),
    )
    return main_async(config)


if __name__ == "__main__":
    sys.exit(main())
