"""`hub service list|show|logs|update|delete|keys`: deployed services from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from hub.cli import telemetry
from hub.cli.deploy import add_wait_options, follow, load_configs, source_notices
from hub.cli.output import print_fields, print_json, print_table
from hub.cli.parsing import add_command
from hub.client import HubClient
from hub.deploy_client import DeployClient
from hub.errors import BadInput
from hub.names import ModelRef, parse_duration, parse_target, validate_fleet_name


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `hub service` group."""
    group = add_command(
        subparsers,
        "service",
        help="list, show, update, delete deployed services; keys and logs",
        description="Services made by `hub deploy`: their generation, state and every device's phase.",
        examples="  hub service list\n  hub service show scorer --output json\n"
        "  hub service update -n scorer -m digits:3\n  hub service logs scorer --lines 50\n"
        "  hub service keys -n scorer\n  hub service token -n scorer\n  hub service delete scorer\n",
    )
    sub = group.add_subparsers(dest="service_command", metavar="ACTION", required=True)

    p = add_command(
        sub,
        "list",
        help="list services",
        description="Services with state, generation, models, target and how many devices are Healthy.",
        examples="  hub service list --output json\n",
    )
    p.set_defaults(func=cmd_list)

    p = add_command(
        sub,
        "show",
        help="show one service",
        description="State, generation and per-device phase, message and scoring URIs.",
        examples="  hub service show scorer\n"
        "  hub service show scorer --output json   # {name, state, generation, tls, devices: [...]}\n"
        "  hub service show scorer --ca > hub-ca.pem   # verify its https:// scoring URIs against this\n",
    )
    _name_args(p)
    p.add_argument("--ca", action="store_true", help="print only the CA certificate (PEM) of its HTTPS certificates")
    p.set_defaults(func=cmd_show)

    p = add_command(
        sub,
        "logs",
        help="show the runtime's log lines",
        description="The runtime's last log lines "
        "from each device (asked live over the device's link; the last failure's tail when offline).",
        examples="  hub service logs scorer\n  hub service logs scorer --device cam-01 --lines 200\n",
    )
    _name_args(p)
    p.add_argument("--device", help="only this device")
    p.add_argument("--lines", type=int, default=100, help="how many lines (default 100)")
    p.set_defaults(func=cmd_logs)

    p = add_command(
        sub,
        "telemetry",
        help="a metric across the service's devices, in time buckets",
        description="The service's figures on every device its target selects: min/avg/max per bucket "
        "(counters such as runtime.requests_total as rates per second, with their sum over the devices).",
        examples="  hub service telemetry scorer --metric p99_ms --since 1h --every 1m\n"
        "  hub service telemetry scorer --metric requests_total --every 5m --output json\n",
    )
    _name_args(p)
    p.add_argument("--metric", required=True, help="a metric name or its end (runtime.latency_p99_ms, p99_ms)")
    p.add_argument("--since", default=telemetry.DEFAULT_SINCE, help="how far back: 30m, 1h, 2d (default 1h)")
    p.add_argument("--every", default="1m", help="bucket width (default 1m)")
    p.set_defaults(func=cmd_telemetry)

    p = add_command(
        sub,
        "update",
        help="roll a service to new models or configs",
        description="Record a new "
        "generation with the given changes (models, configs, target); devices keep serving the old "
        "generation until the new one is healthy, and roll back if it is not. Waits like deploy.",
        examples="  hub service update -n scorer -m digits:3\n"
        "  hub service update -n scorer --ic ic.json --dc dc.json --no-wait\n",
    )
    _name_args(p)
    p.add_argument(
        "-m", "--model", action="append", dest="models", metavar="NAME:VERSION", help="new model list (repeatable)"
    )
    p.add_argument("--ic", "--inference-config", dest="ic", type=Path, help="new inference config JSON")
    p.add_argument("--dc", "--deployment-config", dest="dc", type=Path, help="new deployment config JSON")
    p.add_argument("--target", "-t", metavar="DEVICE|label=value", help="new target")
    add_wait_options(p)
    p.set_defaults(func=cmd_update)

    p = add_command(
        sub,
        "delete",
        help="delete a service",
        description="Take the service out of every device's desired state; the agents stop the runtime and clean up.",
        examples="  hub service delete scorer\n",
    )
    _name_args(p)
    p.set_defaults(func=cmd_delete)

    p = add_command(
        sub,
        "keys",
        help="print (or regenerate) a service's auth keys",
        description="Primary and "
        "secondary keys of a service deployed with authEnabled; send one as 'Authorization: Bearer KEY'.",
        examples="  hub service keys -n scorer\n  hub service keys -n scorer --regenerate secondary\n",
    )
    _name_args(p)
    p.add_argument("--regenerate", choices=["primary", "secondary"], help="replace this key first")
    p.set_defaults(func=cmd_keys)

    p = add_command(
        sub,
        "token",
        help="print a scoring token for a service with token auth",
        description="A token for a service deployed with tokenAuthEnabled (what Azure ML's get_token gives): send "
        "it as 'Authorization: Bearer TOKEN' to the scoring URI; it is valid until its expiry (--expires, default "
        "1h, at most 1d). Get a new one after refresh_after.",
        examples="  hub service token -n scorer\n  hub service token -n scorer --expires 8h --output json\n"
        "  curl --cacert hub-ca.pem -H \"Authorization: Bearer $(hub service token -n scorer)\" ...\n",
    )
    _name_args(p)
    p.add_argument("--expires", default="1h", help="how long the token is valid: 1m to 1d (default 1h)")
    p.set_defaults(func=cmd_token)


def _name_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("service", nargs="?", metavar="SERVICE", help="service name (or -n)")
    p.add_argument("-n", "--name", dest="name_opt", metavar="SERVICE", help="service name")


def _name(args: argparse.Namespace) -> str:
    name = args.name_opt or args.service
    if not name:
        raise BadInput("which service? give SERVICE or -n SERVICE")
    if args.name_opt and args.service and args.name_opt != args.service:
        raise BadInput(f"two service names given: {args.service} and {args.name_opt}")
    return validate_fleet_name("service", name)


def _client(args: argparse.Namespace) -> DeployClient:
    return DeployClient(HubClient(getattr(args, "hub", None)))


def cmd_list(args: argparse.Namespace) -> int:
    """Table or JSON."""
    services = _client(args).list_services()
    if args.output == "json":
        print_json(services)
        return 0
    rows = []
    for s in services:
        healthy = sum(d["phase"] == "Healthy" for d in s["devices"])
        rows.append(
            (
                s["name"],
                s["state"],
                s["generation"],
                ",".join(s["models"]),
                s["target"],
                f"{healthy}/{len(s['devices'])}",
            )
        )
    print_table(rows, ["NAME", "STATE", "GENERATION", "MODELS", "TARGET", "HEALTHY"])
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Details."""
    s = _client(args).get_service(_name(args))
    if args.ca:
        tls = s.get("tls") or {}
        if not tls.get("ca_pem"):
            why = "uses the user's own sslCertificate" if tls else "does not serve HTTPS (sslEnabled)"
            raise BadInput(f"service {s['name']} {why}: the hub CA does not issue its certificates")
        print(tls["ca_pem"], end="")
        return 0
    if args.output == "json":
        print_json(s)
        return 0
    print_fields(
        [
            ("name", s["name"]),
            ("state", s["state"]),
            ("generation", s["generation"]),
            ("models", ", ".join(s["models"])),
            ("entry script", s["entry_script"] or "(no-code ONNX)"),
            ("target", s["target"]),
            ("auth", s["auth"]),
            ("tls", _tls_field(s.get("tls"))),
            ("updated", s["updated"]),
        ]
    )
    print()
    print_table(
        [
            (d["device"], d["phase"], d["serving_generation"] or "", d["scoring_uri"], d["message"])
            for d in s["devices"]
        ],
        ["DEVICE", "PHASE", "SERVING GEN", "SCORING URI", "MESSAGE"],
    )
    return 0


def _tls_field(tls: dict | None) -> str:
    if not tls:
        return "off (http)"
    if tls["issuer"] == "user":
        return "https, the user's sslCertificate"
    cname = f", also {tls['cname']}" if tls.get("cname") else ""
    return f"https, certificates from the hub CA{cname} (get it with --ca)"


def cmd_logs(args: argparse.Namespace) -> int:
    """Each device's lines."""
    if args.lines < 1:
        raise BadInput(f"--lines must be positive, got {args.lines}")
    logs = _client(args).logs(_name(args), args.device, args.lines)
    if args.output == "json":
        print_json(logs)
        return 0
    for entry in logs:
        print(f"==> {entry['device']} ({entry['source']}) <==")
        for line in entry["lines"]:
            print(line)
    return 0


def cmd_telemetry(args: argparse.Namespace) -> int:
    """Buckets of one metric across the service's devices."""
    return telemetry.print_aggregate(args, telemetry.aggregate(args, "services", _name(args)))


def cmd_update(args: argparse.Namespace) -> int:
    """New generation, then follow it like deploy."""
    name = _name(args)
    for m in args.models or []:
        ModelRef.parse(m)
    if args.target is not None:
        parse_target(args.target)  # refused here, before any upload, as the hub would refuse it
    ic, dc = load_configs(args.ic, args.dc)
    if not (args.models or ic or dc is not None or args.target):
        raise BadInput("nothing to update: give -m, --ic, --dc or --target")
    client = _client(args)
    inference = client.upload_inference(ic, source_notices(args)) if ic is not None else None
    view = client.update(name, models=args.models, inference=inference, deployment=dc, target=args.target)
    return follow(client, args, view)


def cmd_delete(args: argparse.Namespace) -> int:
    """Delete."""
    out = _client(args).delete_service(_name(args))
    if args.output == "json":
        print_json(out)
    else:
        print(f"service {out['name']} deleted; devices are stopping it")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """Print keys."""
    client = _client(args)
    name = _name(args)
    keys = client.regenerate_key(name, args.regenerate) if args.regenerate else client.keys(name)
    if args.output == "json":
        print_json(keys)
    else:
        print_fields([("primary key", keys["primaryKey"]), ("secondary key", keys["secondaryKey"])])
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Print a scoring token (alone, so it fits in $(...)), or JSON with its expiry."""
    seconds = parse_duration(args.expires)
    if not 60 <= seconds <= 86400:
        raise BadInput(f"--expires must be 1m to 1d, got {args.expires}")
    token = _client(args).token(_name(args), seconds)
    if args.output == "json":
        print_json(token)
    else:
        print(token["accessToken"])
    return 0
