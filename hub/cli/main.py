"""`hub`: the Edgeport command line. Command groups live in their own modules, each with `register(subparsers)`."""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from hub import credentials
from hub.cli import access, deploy, device, model, serve, service
from hub.cli.parsing import HubArgumentParser, add_global_options
from hub.errors import HubError
from hub.version import VERSION

# The command groups in the order `hub --help` lists them.
COMMAND_MODULES: tuple[ModuleType, ...] = (serve, access, model, device, deploy, service)

DESCRIPTION = """\
Edgeport hub: register models, deploy them to devices, and run the hub server.

Talks to the hub's REST API at --hub (default $EDGEPORT_HUB, the hub of 'hub login', or
http://127.0.0.1:7070) with an API token: --token, $EDGEPORT_TOKEN, or the one 'hub login' stored.
A refused command says which role (viewer, deployer, admin) it needs.
Exit codes: 0 ok, 2 bad input (names, paths, unknown things), 1 failure (hub unreachable, storage)."""

EXAMPLES = """\
examples:
  hub serve --data-dir ./hubdata                       # start a hub on 127.0.0.1:7070
  hub login --hub http://127.0.0.1:7070 --token $(cat ./hubdata/admin.token)
  hub model register -n digits -p model.onnx --tag team=vision
  hub model list --output json
  hub model download digits:1 --target-dir ./digits
"""


def build_parser() -> argparse.ArgumentParser:
    """The full `hub` parser with every registered command group."""
    parser = HubArgumentParser(
        prog="hub", description=DESCRIPTION, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_global_options(parser, defaults=True)
    parser.add_argument("--version", action="version", version=f"hub (edgeport) {VERSION}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; HubError → `error: message` on stderr and its exit code, never a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    credentials.use_token(getattr(args, "token", None))  # every client this command makes sends it
    try:
        code = args.func(args)
    except HubError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        code = exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
