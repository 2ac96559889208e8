"""`hub model register|list|show|download|delete`: the model registry from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hub.cli.output import ProgressLine, human_size, labels, print_fields, print_json, print_table
from hub.cli.parsing import add_command
from hub.client import HubClient
from hub.errors import BadInput
from hub.names import parse_label, parse_model_ref, validate_name


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `hub model` group."""
    group = add_command(
        subparsers,
        "model",
        help="register, list, show, download and delete models",
        description="The model registry: each register adds version N+1 of a name; files are stored once by sha256.",
        examples="  hub model register -n digits -p ./model.onnx --tag team=vision\n"
        "  hub model list --tag team=vision\n  hub model show digits:1\n",
    )
    sub = group.add_subparsers(dest="model_command", metavar="ACTION", required=True)

    p = add_command(
        sub,
        "register",
        help="register a file or folder as the next version of a model",
        description="Upload a file or a whole folder (skipping content the hub already has) and register it as "
        "the next version of NAME. Folder files keep their relative paths.",
        examples="  hub model register -n digits -p model.onnx\n"
        "  hub model register -n resnet -p ./export --tag stage=dev --property accuracy=0.91 -d 'first cut'\n"
        '  hub model register -n digits -p model.onnx --output json   # {"name", "version", "id", ...}\n',
    )
    p.add_argument("-n", "--name", required=True, help="model name: 1-255 of A-Z a-z 0-9 . _ -")
    p.add_argument("-p", "--path", "--model-path", dest="path", required=True, type=Path, help="file or folder")
    p.add_argument("-t", "--tag", action="append", default=[], metavar="KEY=VALUE", help="tag (repeatable)")
    p.add_argument("--property", action="append", default=[], metavar="KEY=VALUE", help="property (repeatable)")
    p.add_argument("-d", "--description", default="", help="free text")
    p.add_argument("--framework", default="", help="e.g. onnx, sklearn, pytorch")
    p.set_defaults(func=cmd_register)

    p = add_command(
        sub,
        "list",
        help="list model versions",
        description="List registered versions, newest first per model; filter by name and tags.",
        examples="  hub model list\n  hub model list -n digits\n  hub model list --tag team=vision --tag stage\n"
        "  hub model list --latest --output json\n",
    )
    p.add_argument("-n", "--name", help="only this model")
    p.add_argument(
        "-t",
        "--tag",
        action="append",
        default=[],
        metavar="KEY[=VALUE]",
        help="only versions with this tag (any value when no =VALUE); repeatable",
    )
    p.add_argument("--latest", action="store_true", help="only the latest version of each model")
    p.set_defaults(func=cmd_list)

    p = add_command(
        sub,
        "show",
        help="show one model version (latest when no version)",
        description="Show a version's details and files.",
        examples="  hub model show digits        # latest\n  hub model show digits:2 --output json\n",
    )
    p.add_argument("model", metavar="NAME[:VERSION]")
    p.set_defaults(func=cmd_show)

    p = add_command(
        sub,
        "download",
        help="download a version's files into a folder",
        description="Download every file of NAME:VERSION (latest when no version) into --target-dir, keeping "
        "names and folder structure; each file is verified against its sha256.",
        examples="  hub model download digits:1 --target-dir ./digits\n",
    )
    p.add_argument("model", metavar="NAME[:VERSION]")
    p.add_argument("--target-dir", type=Path, default=Path("."), help="folder to write into (default: .)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files that differ")
    p.set_defaults(func=cmd_download)

    p = add_command(
        sub,
        "delete",
        help="delete one model version",
        description="Delete NAME:VERSION (refused while a service uses it). Version numbers are never reused.",
        examples="  hub model delete digits:1\n",
    )
    p.add_argument("model", metavar="NAME:VERSION")
    p.set_defaults(func=cmd_delete)


def _client(args: argparse.Namespace) -> HubClient:
    return HubClient(getattr(args, "hub", None))


def _labels(items: list[str], what: str) -> dict[str, str]:
    return dict(parse_label(item, what) for item in items)


def cmd_register(args: argparse.Namespace) -> int:
    """Upload and register; prints the new version."""
    validate_name(args.name)  # check everything locally before hashing or uploading
    tags = _labels(args.tag, "tag")
    properties = _labels(args.property, "property")
    with _client(args) as client:
        model = client.register_model(
            args.name,
            args.path,
            tags=tags,
            properties=properties,
            description=args.description,
            framework=args.framework,
            progress=ProgressLine("uploading"),
        )
    if args.output == "json":
        print_json(model)
    else:
        print(f"registered {model['id']} ({len(model['files'])} files, {human_size(model['size'])})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """List versions."""
    if args.name:
        validate_name(args.name)
    for t in args.tag:
        if "=" in t:
            parse_label(t)
    with _client(args) as client:
        models = client.list_models(args.name, args.tag, args.latest)
    if args.output == "json":
        print_json(models)
    else:
        print_table(
            [
                (
                    m["id"],
                    m["name"],
                    m["version"],
                    len(m["files"]),
                    human_size(m["size"]),
                    labels(m["tags"]),
                    m["created_at"],
                )
                for m in models
            ],
            ["ID", "NAME", "VERSION", "FILES", "SIZE", "TAGS", "CREATED"],
        )
    return 0


def _show(model: dict[str, Any]) -> None:
    print_fields(
        [
            ("id", model["id"]),
            ("name", model["name"]),
            ("version", model["version"]),
            ("description", model["description"]),
            ("framework", model["framework"]),
            ("tags", labels(model["tags"])),
            ("properties", labels(model["properties"])),
            ("created", model["created_at"]),
            ("size", human_size(model["size"])),
            ("artifact", f"{model['repository']}:{model['reference']} ({model['manifest_digest']})"),
        ]
    )
    print()
    print_table([(f["path"], human_size(f["size"]), f["digest"]) for f in model["files"]], ["PATH", "SIZE", "DIGEST"])


def cmd_show(args: argparse.Namespace) -> int:
    """Show one version."""
    name, version = parse_model_ref(args.model)
    with _client(args) as client:
        model = client.get_model(name, version)
    if args.output == "json":
        print_json(model)
    else:
        _show(model)
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    """Download into a folder."""
    name, version = parse_model_ref(args.model)
    target: Path = args.target_dir
    if target.exists() and not target.is_dir():
        raise BadInput(f"target {target} is a file, not a folder")
    with _client(args) as client:
        model, written = client.download_model(
            name, version, target, overwrite=args.overwrite, progress=ProgressLine("downloading")
        )
    if args.output == "json":
        print_json({**model, "target_dir": str(target), "written": [str(p) for p in written]})
    else:
        print(f"downloaded {model['id']} ({len(written)} files, {human_size(model['size'])}) into {target}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    """Delete one version."""
    name, version = parse_model_ref(args.model)
    if version is None:
        raise BadInput(f"say which version to delete: {name}:VERSION")
    with _client(args) as client:
        model = client.delete_model(name, version)
    if args.output == "json":
        print_json({"deleted": model["id"], "name": model["name"], "version": model["version"]})
    else:
        print(f"deleted {model['id']}", file=sys.stdout)
    return 0
