"""`python -m simulators COMMAND ...`: the simulators' command line (each command is one module's `main`)."""

from __future__ import annotations

import importlib
import sys

# (command, module with main(argv) -> int, one-line help); modules load only when chosen.
COMMANDS: list[tuple[str, str, str]] = [
    ("demo", "simulators.demo", "run the Quick start: one hub, simulated devices, deploy and score a real model"),
    ("fleet", "simulators.fleet_cli", "run N simulated agents (real agent code) in one process"),
    ("netfault", "simulators.netfault_cli", "a TCP proxy that adds latency, drops, cuts and restores a link"),
]


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the chosen command's module."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m simulators COMMAND [ARGS...]\n\nSimulated devices, networks and fleets.\n\ncommands:")
        for name, _, text in COMMANDS:
            print(f"  {name:<10} {text}")
        print("\nRun `python -m simulators COMMAND --help` for a command's options.")
        return 0 if argv else 2
    modules = {name: module for name, module, _ in COMMANDS}
    if argv[0] not in modules:
        print(f"error: unknown command {argv[0]!r}: choose one of {', '.join(modules)}", file=sys.stderr)
        return 2
    return int(importlib.import_module(modules[argv[0]]).main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
