"""`hub serve`: run the hub (REST admin API, OCI pull API, and the components other rooms plug in)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from hub.cli.parsing import add_command
from hub.control.channel import add_serve_options
from hub.control.mqtt_bridge import add_serve_options as add_mqtt_serve_options

DEFAULT_DATA_DIR = os.environ.get("EDGEPORT_DATA_DIR") or ".edgeport/hub"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `hub serve`."""
    p = add_command(
        subparsers,
        "serve",
        help="run the hub server",
        description="Run the hub in the foreground: the REST admin API (/api/v1, OpenAPI at /openapi.json) and "
        "the OCI pull API (/v2/) on one port, state in one SQLite database and a blob store in the data "
        "dir. One hub per data dir. Stop with Ctrl-C or SIGTERM.",
        examples="  hub serve                                   # 127.0.0.1:7070, data in ./.edgeport/hub\n"
        "  hub serve --data-dir /var/lib/edgeport --host 0.0.0.0 --port 7070\n",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(DEFAULT_DATA_DIR),
        help=f"state folder (default: $EDGEPORT_DATA_DIR or {DEFAULT_DATA_DIR})",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=7070, help="HTTP port for API and OCI (default: 7070; 0 = any free)")
    p.add_argument("--access-log", action="store_true", help="log every HTTP request")
    # --- rooms add their serve options below (e.g. --grpc-port, --insecure, --mqtt-*) ---
    add_serve_options(p)  # --grpc-port, --insecure (agents' gRPC channel)
    add_mqtt_serve_options(p)  # --mqtt, --mqtt-dir, --mqtt-prefix... (MQTT bridge, room 5)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until stopped."""
    from hub.server import ServeOptions, serve  # keeps `hub model ...` from importing uvicorn/FastAPI

    return serve(ServeOptions(args.data_dir, args.host, args.port, args.access_log), args)
