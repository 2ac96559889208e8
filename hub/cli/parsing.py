"""Argument parsing shared by every `hub` command group: one-line errors, global options anywhere."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from hub.client import default_hub_url


class HubArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line `error: ...` (exit 2) instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        """Print one line naming the command and how to get help; exit 2 (bad input)."""
        sys.stderr.write(f"error: {self.prog}: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def add_global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """`--hub`, `--token` and `--output`; on subcommands they default to SUPPRESS so either position works."""
    suppress: dict[str, Any] = {} if defaults else {"default": argparse.SUPPRESS}
    parser.add_argument(
        "--hub",
        metavar="URL",
        help="hub API address (default: $EDGEPORT_HUB, the hub of 'hub login', or http://127.0.0.1:7070; "
        f"now {default_hub_url()})",
        **({"default": None} if defaults else suppress),
    )
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        help="hub API token (default: $EDGEPORT_TOKEN, or the one 'hub login' stored for this hub)",
        **({"default": None} if defaults else suppress),
    )
    parser.add_argument(
        "--output",
        "-o",
        choices=["table", "json"],
        help="human table (default) or JSON for scripts",
        **({"default": "table"} if defaults else suppress),
    )


def add_command(
    subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    *,
    help: str,
    description: str,
    examples: str = "",
) -> argparse.ArgumentParser:
    """Add a subcommand with the global options, a description and an examples epilog."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help,
        description=description,
        epilog=("examples:\n" + examples) if examples else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_global_options(parser, defaults=False)
    return parser
