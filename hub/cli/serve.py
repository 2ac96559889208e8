"""`hub serve`: run the hub (REST admin API, OCI pull API, the agents' gRPC channel and, optionally, MQTT).

The options are parsed into a `HubConfig` here, checked before anything heavy loads; the server
itself is imported only when the command runs, so other commands never load it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from hub.cli.parsing import add_command
from hub.errors import BadInput
from hub.names import parse_duration
from hub.serve_config import (
    DEFAULT_BLOB_GC_INTERVAL_S,
    DEFAULT_BLOB_GRACE_S,
    DEFAULT_GRPC_PORT,
    DEFAULT_HEARTBEAT_INTERVAL_S,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_RECONNECTS_PER_S,
    DEFAULT_TELEMETRY_INTERVAL_S,
    AgentChannelConfig,
    BlobGcConfig,
    HubConfig,
    MqttConfig,
)

DEFAULT_DATA_DIR = os.environ.get("EDGEPORT_DATA_DIR") or ".edgeport/hub"
DEFAULT_MQTT_PREFIX = "edgeport"  # shown in --help; the bridge applies the protocol's default when none is given


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `hub serve`."""
    p = add_command(
        subparsers,
        "serve",
        help="run the hub server",
        description="Run the hub in the foreground: the REST admin API (/api/v1, OpenAPI at /openapi.json) and "
        "the OCI pull API (/v2/) on one port, state in one SQLite database and a blob store in the data "
        "dir. One hub per data dir. Stop with Ctrl-C or SIGTERM. Every call needs an API token: on a new data "
        "dir (or when no admin token is left) the hub prints an admin token once and writes it to "
        "DATA_DIR/admin.token (mode 0600); `hub login --token $(cat DATA_DIR/admin.token)` keeps it for the CLI.",
        examples="  hub serve                                   # 127.0.0.1:7070, data in ./.edgeport/hub\n"
        "  hub serve --data-dir /var/lib/edgeport --host 0.0.0.0 --port 7070\n",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(DEFAULT_DATA_DIR),
        help=f"state folder (default: $EDGEPORT_DATA_DIR or {DEFAULT_DATA_DIR})",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default: {DEFAULT_HOST})")
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"HTTP port for API and OCI (default: {DEFAULT_PORT}; 0 = any free)",
    )
    p.add_argument("--access-log", action="store_true", help="log every HTTP request")
    tls = p.add_argument_group(
        "HTTPS (on by default when --host is not a loopback address)",
        "The REST/OCI port serves HTTPS with a certificate the hub CA issues for --host, this machine's name "
        "and every --tls-san, or with your own --tls-cert/--tls-key. Clients pin the hub CA: agents through "
        "their enrollment token, `hub login` by its fingerprint.",
    )
    tls.add_argument("--tls-san", action="append", default=[], metavar="NAME",
                     help="another DNS name or IP address clients reach the hub by (repeatable; turns HTTPS on "
                     "on loopback too)")  # fmt: skip
    tls.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve HTTPS with this certificate (chain)")
    tls.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")
    _add_agent_channel_options(p)
    _add_mqtt_options(p)
    _add_blob_gc_options(p)
    p.set_defaults(func=run)


def _add_agent_channel_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=DEFAULT_GRPC_PORT,
        help=f"port of the agents' gRPC channel (default {DEFAULT_GRPC_PORT}; 0 = any free)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="development only, no transport security: plain-text gRPC with devices named in metadata "
        "(agents need --insecure too), plain HTTP on a non-loopback --host, plain mqtt:// to a broker on "
        "another machine; a warning is logged at every start",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=int,
        default=DEFAULT_HEARTBEAT_INTERVAL_S,
        metavar="SECONDS",
        help=f"how long an agent may send nothing before it sends a heartbeat (default {DEFAULT_HEARTBEAT_INTERVAL_S})",
    )
    parser.add_argument(
        "--telemetry-interval",
        type=int,
        default=DEFAULT_TELEMETRY_INTERVAL_S,
        metavar="SECONDS",
        help=f"how often agents send runtime and system figures (default {DEFAULT_TELEMETRY_INTERVAL_S}, the usual "
        "monitoring interval; 10,000 agents at 15 s kept a hub busy with 667 messages/s)",
    )
    parser.add_argument(
        "--reconnect-rate",
        type=float,
        default=DEFAULT_RECONNECTS_PER_S,
        metavar="PER_SECOND",
        help="reconnections this hub takes per second (TLS handshake and Hello each; default "
        f"{DEFAULT_RECONNECTS_PER_S:.0f}, what a 2-core hub managed). Agents that lose the hub spread their "
        "reconnects over enrolled devices / this (at most 120 s), so a restart does not bring the whole fleet "
        "back in one burst",
    )
    parser.add_argument(
        "--audit-retention",
        default="90d",
        metavar="DURATION",
        help="how long the audit log keeps a record: 30d, 365d, ... (default 90d; at most a million records)",
    )
    parser.add_argument(
        "--telemetry-retention",
        default="7d",
        metavar="DURATION",
        help="how long telemetry is kept: 12h, 7d, ... (default 7d)",
    )
    parser.add_argument(
        "--artifact-url",
        metavar="URL",
        help="OCI base URL agents pull artifacts from, when a mirror or CDN fronts this hub's /v2/ "
        "(default: this hub's own address)",
    )


def _add_mqtt_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("MQTT bridge (IoT devices)")
    group.add_argument(
        "--mqtt",
        metavar="URL",
        help="connect to this MQTT broker: mqtts://HOST[:8883] (TLS, the broker's certificate issued by the hub "
        "CA into --mqtt-dir) or, on this machine or with --insecure, mqtt://127.0.0.1:1883 "
        "(devices may then run `agent run --transport mqtt`)",
    )
    group.add_argument(
        "--mqtt-dir",
        type=Path,
        help="folder of the broker's password and ACL files, which the hub writes (default: DATA_DIR/mqtt); "
        "the broker's pid file there is sent SIGHUP on change",
    )
    group.add_argument("--mqtt-prefix", help=f"topic prefix (default {DEFAULT_MQTT_PREFIX})")
    group.add_argument("--mqtt-advertise", metavar="URL", help="broker URL given to devices (default: --mqtt)")
    group.add_argument(
        "--mqtt-run-broker",
        action="store_true",
        help="also run mosquitto on --mqtt's host:port, configured in --mqtt-dir (a TLS listener for mqtts://)",
    )


def _add_blob_gc_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("blob collection (space of deleted models and old service files)")
    group.add_argument(
        "--blob-grace",
        default=f"{DEFAULT_BLOB_GRACE_S}s",
        metavar="DURATION",
        help="spare an unreferenced blob this long after it was uploaded or last used, so uploads in flight "
        "are never collected; longer than your slowest model upload (default 1h)",
    )
    group.add_argument(
        "--blob-gc-interval",
        default=f"{DEFAULT_BLOB_GC_INTERVAL_S}s",
        metavar="DURATION",
        help="collect unreferenced blobs this often; 0 turns the timer off (default 10m)",
    )


def _duration_option(option: str, text: str, *, zero_allowed: bool = False) -> int:
    if zero_allowed and text.strip() in {"0", "0s"}:
        return 0
    try:
        return parse_duration(text)
    except BadInput as exc:
        raise BadInput(f"{option}: {exc.message}") from None


def config_from_args(args: argparse.Namespace) -> HubConfig:
    """The `HubConfig` the parsed `hub serve` options describe; BadInput naming the option that is wrong."""
    retention_s = _duration_option("--telemetry-retention", args.telemetry_retention)
    blob_gc = BlobGcConfig(
        grace_s=_duration_option("--blob-grace", args.blob_grace, zero_allowed=True),
        interval_s=_duration_option("--blob-gc-interval", args.blob_gc_interval, zero_allowed=True),
    )
    agents = AgentChannelConfig(
        grpc_port=args.grpc_port,
        insecure=args.insecure,
        heartbeat_interval_s=args.heartbeat_interval,
        telemetry_interval_s=args.telemetry_interval,
        reconnects_per_s=args.reconnect_rate,
        telemetry_retention_s=retention_s,
        artifact_url=args.artifact_url,
    )
    mqtt = None
    if args.mqtt:
        mqtt = MqttConfig(
            url=args.mqtt,
            directory=args.mqtt_dir,
            prefix=args.mqtt_prefix,
            advertise=args.mqtt_advertise,
            run_broker=args.mqtt_run_broker,
        )
    return HubConfig(
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        access_log=args.access_log,
        agents=agents,
        mqtt=mqtt,
        blob_gc=blob_gc,
        audit_retention_s=_duration_option("--audit-retention", args.audit_retention),
        tls_sans=tuple(args.tls_san),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until stopped."""
    config = config_from_args(args)
    from hub.server import serve  # only `hub serve` loads uvicorn, FastAPI and the services

    return serve(config)
