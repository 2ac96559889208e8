"""`hub deploy`: deploy models to devices and follow every device's progress until the service settles."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hub.cli.output import print_json, print_table
from hub.cli.parsing import add_command
from hub.client import HubClient
from hub.deploy_client import DeployClient, DeploymentFailed, Notify
from hub.deployconfig import load_json_file, parse_deployment_config, parse_inference_config, resolve_tls_files
from hub.names import ModelRef, parse_target, validate_fleet_name

DEFAULT_WAIT_S = 600.0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `hub deploy`."""
    p = add_command(
        subparsers,
        "deploy",
        help="deploy models to devices as a scoring service",
        description="Record the desired state of service NAME (models, entry script, environment, deployment "
        "config, target) as a new generation; agents on the targeted devices pull the artifacts, start the "
        "runtime and report. Waits and shows each device's progress until all are Healthy (then prints the "
        "scoring URIs) or one Failed/RolledBack (then prints the reason and log tail, exit 1). A no-code ONNX "
        "deployment needs no --ic.",
        examples="  hub deploy -n digits-svc -m digits:1 --target site=lab                  # no-code ONNX\n"
        "  hub deploy -n scorer -m digits:2 --ic inferenceconfig.json --dc deploymentconfig.json --target cam-01\n"
        "  hub deploy -n scorer -m digits:3 --ic ic.json --target site=lab --overwrite --no-wait\n",
    )
    p.add_argument("-n", "--name", required=True, help="service name")
    p.add_argument(
        "-m",
        "--model",
        action="append",
        required=True,
        metavar="NAME:VERSION",
        dest="models",
        help="model to deploy (repeatable; NAME alone = latest version)",
    )
    p.add_argument(
        "--ic",
        "--inference-config",
        dest="ic",
        type=Path,
        help="inference config JSON (entryScript, sourceDirectory, condaFile/requirements)",
    )
    p.add_argument(
        "--dc",
        "--deployment-config",
        dest="dc",
        type=Path,
        help="deployment config JSON (containerResourceRequirements, port, authEnabled, tokenAuthEnabled, "
        "sslEnabled [+ sslCertificate/sslKey files relative to it, sslCname], ...)",
    )
    p.add_argument(
        "--target",
        "-t",
        required=True,
        metavar="DEVICE|label=value",
        help="a device name, or label=value[,label=value] for every device with those labels",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing service of that name")
    add_wait_options(p)
    p.set_defaults(func=cmd_deploy)


def add_wait_options(p: argparse.ArgumentParser) -> None:
    """`--no-wait` and `--timeout`, shared by deploy and service update."""
    p.add_argument("--no-wait", action="store_true", help="return once the hub recorded the desired state")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_WAIT_S,
        help=f"seconds to wait for all devices (default {DEFAULT_WAIT_S:.0f})",
    )


def load_configs(ic_path: Path | None, dc_path: Path | None) -> tuple[Any, dict[str, Any] | None]:
    """(InferenceConfig or None, deployment dict or None), validated locally so bad files fail before uploads."""
    ic = None
    if ic_path is not None:
        ic = parse_inference_config(
            load_json_file(ic_path, "inference config"), ic_path.parent, where=f"inference config {ic_path}"
        )
    dc = None
    if dc_path is not None:
        where = f"deployment config {dc_path}"
        dc = resolve_tls_files(load_json_file(dc_path, "deployment config"), dc_path.parent, where)
        parse_deployment_config(dc, where=where)
    return ic, dc


def source_notices(args: argparse.Namespace) -> Notify:
    """Where the source upload's "uploading N files" line (stdout, stderr with --output json) and warnings go."""
    info = sys.stderr if args.output == "json" else sys.stdout

    def notify(kind: str, text: str) -> None:
        stream = sys.stderr if kind == "warning" else info
        stream.write(f"warning: {text}\n" if kind == "warning" else f"{text}\n")
        stream.flush()

    return notify


def cmd_deploy(args: argparse.Namespace) -> int:
    """Validate, upload the entry script's folder, record the service, follow it."""
    validate_fleet_name("service", args.name)
    for m in args.models:
        ModelRef.parse(m)
    parse_target(args.target)  # refused here, before any upload, as the hub would refuse it
    ic, dc = load_configs(args.ic, args.dc)
    client = DeployClient(HubClient(getattr(args, "hub", None)))
    inference = client.upload_inference(ic, source_notices(args)) if ic is not None else None
    view = client.deploy(
        args.name, args.models, args.target, inference=inference, deployment=dc or {}, overwrite=args.overwrite
    )
    return follow(client, args, view)


def follow(client: DeployClient, args: argparse.Namespace, view: dict[str, Any]) -> int:
    """Print progress until the generation settles (unless --no-wait); 0 Healthy, 1 Failed/RolledBack/timeout."""
    as_json = args.output == "json"
    log = sys.stderr if as_json else sys.stdout
    name, generation = view["name"], view["generation"]
    log.write(
        f"service {name} generation {generation} -> {len(view['devices'])} device(s) "
        f"({', '.join(d['device'] for d in view['devices'])})\n"
    )
    log.flush()
    if args.no_wait:
        if as_json:
            print_json(view)
        return 0

    def changed(device: str, phase: str, message: str) -> None:
        log.write(f"  {device}: {phase}{' - ' + message if message else ''}\n")
        log.flush()

    try:
        view = client.wait(name, generation, timeout=args.timeout, on_change=changed)
    except DeploymentFailed as exc:
        failed = exc.view or client.get_service(name)
        if as_json:
            print_json(failed)
        sys.stderr.write(f"error: {exc.message}\n")
        for d in failed.get("devices", []):
            if d["phase"] in ("Failed", "RolledBack"):
                serving = f"; generation {d['serving_generation']} keeps serving" if d["serving_generation"] else ""
                sys.stderr.write(f"{d['device']}: {d['phase']}: {d['message']}{serving}\n")
                for line in d.get("log_tail", [])[-20:]:
                    sys.stderr.write(f"  | {line}\n")
        return 1
    if as_json:
        print_json(view)
    else:
        print(f"service {name} generation {generation} is Healthy on {len(view['devices'])} device(s)")
        print_table(
            [(d["device"], d["scoring_uri"], d["swagger_uri"]) for d in view["devices"]],
            ["DEVICE", "SCORING URI", "SWAGGER URI"],
        )
    return 0
