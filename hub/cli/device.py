"""`hub device enroll|list|show|revoke`: the fleet from the command line."""

from __future__ import annotations

import argparse
import time
from typing import Any

from hub.cli import telemetry
from hub.cli.output import labels, print_fields, print_json, print_table
from hub.cli.parsing import add_command
from hub.client import HubClient
from hub.deploy_client import DeployClient
from hub.names import parse_duration, parse_labels, parse_token_lifetime, validate_fleet_name


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `hub device` group."""
    group = add_command(
        subparsers,
        "device",
        help="enroll, list, show and revoke devices",
        description="Devices run the Edgeport agent. Enrolling prints a one-time, expiring token; on the device "
        "`agent run --hub HOST:PORT --token TOKEN --data-dir DIR` exchanges it for a certificate (mutual TLS).",
        examples="  hub device enroll cam-01 --label site=lab --label kind=camera\n"
        "  hub device list\n  hub device show cam-01 --output json\n  hub device revoke cam-01\n",
    )
    sub = group.add_subparsers(dest="device_command", metavar="ACTION", required=True)

    p = add_command(
        sub,
        "enroll",
        help="register a device and print its one-time enrollment token",
        description="Register NAME with labels and print a one-time enrollment token that expires (default 1h). "
        "The token pins this hub's CA, so the agent trusts the hub on first contact. A revoked device's "
        "name is enrolled again only with --replace, which issues a new identity. Needs an admin token.",
        examples="  hub device enroll cam-01 --label site=lab\n"
        '  hub device enroll cam-02 --expires 15m --output json   # {"device", "token", "expires"}\n',
    )
    p.add_argument("name", metavar="NAME", help="device name: letters, digits, '.', '_', '-'")
    p.add_argument(
        "-l",
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="label used by deploy targets (repeatable)",
    )
    p.add_argument("--expires", default="1h", help="token lifetime: 90s, 30m, 1h, 2d (default 1h, at most 30d)")
    p.add_argument("--replace", action="store_true", help="enroll the name of a revoked device again (admin)")
    p.set_defaults(func=cmd_enroll)

    p = add_command(
        sub,
        "list",
        help="list devices",
        description="Devices with state, presence, labels, "
        "agent version, when the hub last heard from each and how many services they run.",
        examples="  hub device list\n  hub device list --output json\n",
    )
    p.set_defaults(func=cmd_list)

    p = add_command(
        sub,
        "show",
        help="show one device",
        description="Inventory (CPU, memory, arch, OS, "
        "onnxruntime providers, accelerators), presence, services and the latest telemetry.",
        examples="  hub device show cam-01\n",
    )
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_show)

    p = add_command(
        sub,
        "telemetry",
        help="query a device's telemetry",
        description="Telemetry points the "
        "device sent (agent and system figures, runtime statistics per service), newest first; kept "
        "for the hub's retention period (default 7 days).",
        examples="  hub device telemetry cam-01 --metric agent.rss_bytes --since 1h\n"
        "  hub device telemetry cam-01 --metric p99_ms --since 1h --every 1m\n"
        "  hub device telemetry cam-01 --service scorer --limit 20 --output json\n",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--metric", help="only this metric (e.g. agent.rss_bytes, runtime.latency_p99_ms)")
    p.add_argument("--service", help="only this service's figures")
    p.add_argument("--since", help="how far back: 90s, 30m, 1h, 2d (default: all kept)")
    p.add_argument("--limit", type=int, default=50, help="at most this many points (default 50)")
    p.add_argument("--every", help="bucket width (e.g. 1m): min/avg/max per bucket of --metric, --since default 1h")
    p.set_defaults(func=cmd_telemetry)

    p = add_command(
        sub,
        "revoke",
        help="revoke a device",
        description="Revoke NAME: its certificate is "
        "refused from now on and its live connection is closed. Enroll it again for a new identity.",
        examples="  hub device revoke cam-01\n",
    )
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_revoke)


def _client(args: argparse.Namespace) -> DeployClient:
    return DeployClient(HubClient(getattr(args, "hub", None)))


def cmd_enroll(args: argparse.Namespace) -> int:
    """Print the token (or JSON)."""
    validate_fleet_name("device", args.name)  # check locally first: clear errors even with no hub running
    parse_labels(args.label)
    parse_token_lifetime(args.expires)  # at most 30 days, as the hub will insist
    client = _client(args)
    out = client.enroll_device(args.name, args.label, args.expires, replace=args.replace)
    if args.output == "json":
        print_json(out)
    else:
        print(f"device {out['device']} registered; enrollment token (one use, expires {out['expires']}):")
        print(out["token"])
        address = client.hub.url.split("://", 1)[-1]
        print(f"on the device: agent run --hub {address} --token {out['token']} --data-dir DIR")
    return 0


def _presence(d: dict[str, Any]) -> str:
    if d["state"] != "enrolled":
        return d["state"]
    return "online" if d["online"] else "offline"


def cmd_list(args: argparse.Namespace) -> int:
    """Table or JSON of devices."""
    devices = _client(args).list_devices()
    if args.output == "json":
        print_json(devices)
        return 0
    rows = [
        (
            d["name"],
            _presence(d),
            labels(d["labels"]),
            d["agent_version"] or "",
            d["last_seen"] or "",
            len(d["services"]),
        )
        for d in devices
    ]
    print_table(rows, ["NAME", "STATE", "LABELS", "AGENT", "LAST SEEN", "SERVICES"])
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Details of one device."""
    d = _client(args).get_device(args.name)
    if args.output == "json":
        print_json(d)
        return 0
    hw = d["hardware"] or {}
    accelerators = ", ".join(f"{a.get('kind', '')}:{a.get('name', '')}" for a in hw.get("accelerators", []))
    print_fields(
        [
            ("name", d["name"]),
            ("state", _presence(d)),
            ("labels", labels(d["labels"])),
            ("agent", d["agent_version"] or ""),
            ("enrolled", d["enrolled"] or ""),
            ("last seen", d["last_seen"] or ""),  # any message counts: agents send heartbeats only when quiet
            ("last heartbeat", d["last_heartbeat"] or ""),
            ("uptime", f"{d['uptime_s'] or 0}s"),
            ("cpus", hw.get("cpuCount", "")),
            ("memory", f"{int(hw.get('memoryBytes', 0)) // 2**20} MiB"),
            ("arch", hw.get("arch", "")),
            ("os", hw.get("os", "")),
            ("onnx providers", ", ".join(hw.get("onnxProviders", []))),
            ("accelerators", accelerators or "none"),
            ("profile", hw.get("profile", "") or "(real hardware)"),
            ("desired revision", f"{d['desired_revision']} (applied {d['applied_revision']})"),
        ]
    )
    print()
    print_table(
        [(s["service"], s["generation"], s["phase"], s["scoring_uri"]) for s in d["services"]],
        ["SERVICE", "GENERATION", "PHASE", "SCORING URI"],
    )
    if d["telemetry"]:
        print()
        print_table([(k, f"{v:g}") for k, v in sorted(d["telemetry"].items())], ["METRIC", "LATEST"])
    return 0


def cmd_telemetry(args: argparse.Namespace) -> int:
    """Points newest first."""
    validate_fleet_name("device", args.name)
    since = parse_duration(args.since) if args.since else None
    if args.every:  # buckets: the hub answers "not found" for an unknown device itself
        return telemetry.print_aggregate(args, telemetry.aggregate(args, "devices", args.name, service=args.service))
    client = _client(args)
    client.get_device(args.name)  # a clear "not found" rather than an empty list
    points = client.telemetry(device=args.name, service=args.service, metric=args.metric, since=since, limit=args.limit)
    if args.output == "json":
        print_json(points)
        return 0
    rows = [
        (
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(p["at_ms"] / 1000)),
            p["service"],
            p["metric"],
            f"{p['value']:g}",
        )
        for p in points
    ]
    print_table(rows, ["AT", "SERVICE", "METRIC", "VALUE"])
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    """Revoke."""
    d = _client(args).revoke_device(args.name)
    if args.output == "json":
        print_json(d)
    else:
        print(f"device {d['name']} revoked")
    return 0
